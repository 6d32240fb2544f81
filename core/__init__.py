"""The platform-neutral core of assistant-bridge.

Nothing under ``core`` imports a chat platform's SDK: adapters in ``bots/`` translate platform
events into :class:`core.messages.InboundMessage` values and render :mod:`core.events`.
"""

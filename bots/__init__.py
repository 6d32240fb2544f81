"""Platform adapters and the process that serves them. Each platform's SDK stays in its package."""

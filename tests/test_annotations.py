"""Assistants text cleaning: markers and sandbox links are replaced however the deltas split them."""

from __future__ import annotations

import pytest

from core.backends.annotations import AnnotatedText

CASES = [
    (
        "Download [the data](sandbox:/mnt/data/data.csv) now.",
        ("sandbox:/mnt/data/data.csv", "attached: data.csv"),
        "Download the data (attached: data.csv) now.",
    ),
    (
        "Holidays are 25 days【4:0†source】. And [a](http://x) ok",
        ("【4:0†source】", "[1]"),
        "Holidays are 25 days[1]. And [a](http://x) ok",
    ),
    (
        "Bare sandbox:/mnt/data/x.csv here",
        ("sandbox:/mnt/data/x.csv", "attached: x.csv"),
        "Bare attached: x.csv here",
    ),
    (
        "No annotation [x](sandbox:/mnt/data/y.csv) 【1:2†s】end",
        ("unrelated", "-"),
        "No annotation x (file y.csv could not be delivered) end",
    ),
    (
        "See the chart! ![chart](sandbox:/mnt/data/chart.png) Done!",
        ("sandbox:/mnt/data/chart.png", "attached: chart.png"),
        "See the chart! chart (attached: chart.png) Done!",
    ),
]


@pytest.mark.parametrize(("text", "replacement", "expected"), CASES)
def test_every_split_of_the_deltas_gives_the_same_clean_text(
    text: str, replacement: tuple[str, str], expected: str
) -> None:
    for size in range(1, len(text) + 1):
        cleaned = AnnotatedText()
        cleaned.replace(*replacement)
        shown = "".join(cleaned.feed(text[i : i + size]) for i in range(0, len(text), size)) + cleaned.flush()
        assert shown == expected, f"delta size {size}"


def test_annotation_arriving_after_its_text_is_still_applied() -> None:
    cleaned = AnnotatedText()
    first = cleaned.feed("Cited【4:0†source】 and more")
    cleaned.replace("【4:0†source】", "[1]")
    assert first + cleaned.feed(" text") + cleaned.flush() == "Cited[1] and more text"


def test_plain_text_streams_without_delay() -> None:
    assert AnnotatedText().feed("Nothing special here. ") == "Nothing special here. "


def test_brackets_that_are_not_links_or_markers_stream_on_and_stay() -> None:
    cleaned = AnnotatedText()
    code = "data = [\n  1,\n  2,\n"
    assert cleaned.feed(code) == code  # an open list in code: a link label has no line break
    assert cleaned.feed("]\n【注意】\n見てください") == "]\n【注意】\n見てください"
    assert cleaned.flush() == ""

"""The one-line reason for a case, and the notice when the Advisor contradicts the data."""

from __future__ import annotations

import pytest

from core.advice import cases, why


def test_an_unknown_similarity_says_so_and_asks() -> None:
    reason = why.case_reason(240, 4, "unsure", why.ASKED)
    assert reason.case == 2
    assert reason.line.startswith("Case 2 (truncated feature extraction) because 240 images is small")
    assert "we do not know how close your images are to ImageNet" in reason.line


@pytest.mark.parametrize(
    ("source", "words"),
    [
        (why.ADVISOR, "you told the Advisor your images are similar to ImageNet"),
        (why.ASKED, "you said your images are similar to ImageNet"),
        (why.SAMPLE, "this sample is similar to ImageNet"),
        (why.MEASURED, "your images measure as similar to ImageNet (centroid distance 0.2)"),
    ],
)
def test_the_line_names_where_the_similarity_came_from(source: str, words: str) -> None:
    reason = why.case_reason(240, 4, "similar", source, evidence="centroid distance 0.2")
    assert reason.case == 1 and words in reason.line


def test_different_from_not_different_to() -> None:
    assert "different from ImageNet" in why.case_reason(50_000, 4, "different", why.ASKED).line


def test_an_advisor_told_ten_million_images_contradicts_two_hundred() -> None:
    reason = why.case_reason(200, 2, "different", why.ADVISOR)
    notice = why.contradiction(4, reason, advisor_images=10_000_000)
    assert notice is not None and (notice.advisor_case, notice.data_case) == (4, 2)
    assert "told 10,000,000 images (large)" in notice.message and "has 200 (small)" in notice.message


def test_no_notice_when_the_advisor_agrees_or_was_not_asked() -> None:
    reason = why.case_reason(200, 2, "different", why.ADVISOR)
    assert why.contradiction(2, reason, advisor_images=2_000) is None
    assert why.contradiction(None, reason) is None


def test_the_situation_follows_not_sure() -> None:
    from core.advice.cases import recommend

    assert (
        why.situation(recommend(200, 2, "different"), "different")
        == "Small data set, different from ImageNet."
    )
    unsure = why.situation(recommend(200, 2, "unsure"), "unsure")
    assert unsure.startswith("Small data set, closeness to ImageNet not known: case 2")
    assert "different from ImageNet" in unsure and "Small data set, different" not in unsure


def test_a_measured_size_replaces_the_count_in_the_line() -> None:
    flat = cases.SizeReading("small", "the learning curve is flat (+0.4% per doubling of the images)")

    reason = why.case_reason(
        50_000, 4, "similar", why.MEASURED, evidence="the new layer scores 97%", size=flat
    )

    assert reason.case == 1  # counted, 50,000 images would have been large: case 3
    assert reason.line.startswith(
        "Case 1 (feature extraction) because 50,000 images measure as small (the learning curve is flat"
    )
    assert "your images measure as similar to ImageNet (the new layer scores 97%)" in reason.line

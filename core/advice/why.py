"""Why a case was chosen for a data set, in one line, and when the Advisor's answer contradicts it.

The Train page pre-selects a case for the data the user picked. People trust (and correct) a
choice they can read the reason for, so the reason names the two inputs of the advice and where
the second one came from: the Advisor's answer, the user's answer on the Train page, a sample's
known nature, or a measurement of the images. The line is made here, not in a page, so that a
measured similarity feeds the same sentence as a typed one. No torch: the page must answer at once.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.advice.cases import CASES, DEFAULT_DIVIDING_LINE, Advice, SizeReading, recommend, size_of

# Where the similarity answer came from.
ADVISOR, ASKED, SAMPLE, MEASURED = "advisor", "asked", "sample", "measured"
SOURCES = (ADVISOR, ASKED, SAMPLE, MEASURED)

_SIMILAR_WORDS = {"similar": "similar to ImageNet", "different": "different from ImageNet"}


@dataclass(frozen=True)
class CaseReason:
    """The advice for a data set and the sentence that explains it."""

    advice: Advice
    num_images: int
    similarity: str  # similar | different | unsure, as given
    source: str  # one of SOURCES
    line: str

    @property
    def case(self) -> int:
        return self.advice.case


@dataclass(frozen=True)
class Contradiction:
    """The Advisor's case differs from the one the chosen data calls for."""

    advisor_case: int
    data_case: int
    message: str


def case_reason(
    num_images: int,
    num_classes: int,
    similarity: str,
    source: str,
    *,
    dividing_line: int = DEFAULT_DIVIDING_LINE,
    evidence: str | None = None,
    size: SizeReading | None = None,
) -> CaseReason:
    """The advice for ``num_images`` in ``num_classes`` classes, with its reason in one line:
    "Case 2 because 240 images is small and we do not know how close your images are to ImageNet."

    ``source`` says where ``similarity`` came from (``SOURCES``); ``evidence``, for a measured
    similarity, says what was measured, in a few words; ``size``, a measured size, replaces the
    count against the line.
    """
    if source not in SOURCES:
        raise ValueError(f"unknown similarity source {source!r}; choose one of: {', '.join(SOURCES)}")
    advice = recommend(
        num_images, num_classes, similarity, dividing_line, size=None if size is None else size.size
    )
    if size is None:
        size_words = f"{num_images:,} images is {advice.size} (the line is at {dividing_line:,})"
    else:
        size_words = f"{num_images:,} images measure as {size.size} ({size.reason})"
    line = (
        f"Case {advice.case} ({advice.name}) because {size_words} and "
        f"{_similarity_words(similarity, source, evidence)}."
    )
    return CaseReason(advice, num_images, similarity, source, line)


def _similarity_words(similarity: str, source: str, evidence: str | None) -> str:
    if similarity == "unsure":
        if source == MEASURED:
            return "the measurement could not tell how close your images are to ImageNet"
        return "we do not know how close your images are to ImageNet: say below if you do"
    words = _SIMILAR_WORDS[similarity]
    if source == MEASURED:
        return f"your images measure as {words}" + (f" ({evidence})" if evidence else "")
    if source == SAMPLE:
        return f"this sample is {words}"
    if source == ADVISOR:
        return f"you told the Advisor your images are {words}"
    return f"you said your images are {words}"


def contradiction(
    advisor_case: int | None,
    reason: CaseReason,
    advisor_images: int | None = None,
    dividing_line: int = DEFAULT_DIVIDING_LINE,
) -> Contradiction | None:
    """The notice when the Advisor's case is not the one this data calls for, or None.

    ``advisor_images`` is the size the Advisor was told, when known: then the notice names both
    sizes ("The Advisor was told 10,000,000 images; this data set has 200").
    """
    if advisor_case is None or advisor_case == reason.case:
        return None
    data_case = CASES[reason.case]
    if advisor_images is not None and size_of(advisor_images, dividing_line) != reason.advice.size:
        told = f"The Advisor was told {advisor_images:,} images ({size_of(advisor_images, dividing_line)})"
        ends = f"this data set has {reason.num_images:,} ({reason.advice.size})"
    else:
        told = f"The Advisor chose case {advisor_case}"
        ends = f"this data set ({reason.num_images:,} images) calls for case {reason.case}"
    message = (
        f"{told}, but {ends}. Case {reason.case} ({data_case.name}) fits the data you picked; "
        f"case {advisor_case} stays selected until you change it."
    )
    return Contradiction(advisor_case, reason.case, message)


def situation(advice: Advice, similarity: str) -> str:
    """The advice's cell of the matrix in words, as the user answered: "Small data set,
    different from ImageNet.", or for "not sure" what the case assumes and why."""
    size = f"{advice.size.capitalize()} data set"
    if similarity == "unsure":
        return (
            f"{size}, closeness to ImageNet not known: case {advice.case} is the one that holds up "
            f"either way (it treats the images as {_SIMILAR_WORDS[advice.similarity]})."
        )
    return f"{size}, {_SIMILAR_WORDS[similarity]}."

"""The Train page says why it pre-selected a case, asks what it cannot know, and notices when
the Advisor's answer contradicts the data picked."""

from __future__ import annotations

from fixtures.data.zips import classes, make_zip
from helpers_jobs import wait_until
from helpers_pages import APP, open_page
from streamlit.testing.v1 import AppTest

from core.jobs import uploads


def reason_line(at: AppTest) -> str:
    return next(m.value for m in at.markdown if "because" in m.value)


def notices(at: AppTest) -> list:
    return [w for w in at.warning if "Advisor" in w.value]


def test_an_upload_of_unknown_kind_says_why_and_asks() -> None:
    digest = uploads.accept_upload(make_zip(classes({"cats": 120, "dogs": 120})), "pets.zip")
    wait_until(lambda: uploads.upload_state(digest).dataset is not None)
    at = open_page("pages/train.py", upload=digest)
    assert at.radio(key="train.plan_similarity").value == "unsure"
    assert "Case 2" in reason_line(at) and "240 images is small" in reason_line(at)
    assert "we do not know how close your images are to ImageNet" in reason_line(at)
    at.radio(key="train.plan_similarity").set_value("similar").run()  # ImageNet-like photos: case 1
    assert at.radio(key="train.plan_case").value == 1
    assert "you said your images are similar to ImageNet" in reason_line(at)


def test_a_sample_states_what_it_is() -> None:
    at = open_page("pages/train.py")
    assert "this sample is similar to ImageNet" in reason_line(at)
    assert reason_line(at).startswith(":material/lightbulb: Case 1")


def test_the_question_starts_from_the_advisor_answer() -> None:
    at = open_page("pages/advisor.py")
    at.radio(key="advisor.similarity").set_value("different").run()
    at.button(key="advisor.use_plan").click().run()
    assert at.radio(key="train.plan_similarity").value == "different"
    assert "you told the Advisor your images are different from ImageNet" in reason_line(at)
    assert not notices(at)  # 2,000 images and 200 are both small: no contradiction


def test_an_advisor_told_millions_is_contradicted_by_two_hundred_images() -> None:
    at = AppTest.from_file(APP, default_timeout=180).run()
    at.select_slider(key="advisor.images").set_value(5_000_000).run()
    at.radio(key="advisor.similarity").set_value("different").run()
    at.button(key="advisor.use_plan").click().run()
    assert at.radio(key="train.plan_case").value == 4
    [notice] = notices(at)
    assert "The Advisor was told 5,000,000 images (large)" in notice.value
    assert "this data set has 200 (small)" in notice.value
    at.button(key="train.use_data_case").click().run()
    assert at.radio(key="train.plan_case").value == 2
    assert not notices(at)

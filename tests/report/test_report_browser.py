"""The HTML report opened in headless Chromium: what a researcher sees, with nothing fetched.

The run is written with the worker's own writers and the tiny model's tokenizer, so tokens show as
words; one accepted response carries a strongly positive token ("answer") and one rejected response a
strongly negative one ("minus"), whose rendered colours must be red and blue.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from influence_trace.demo.tiny_model import build_tokenizer
from influence_trace.io.outputs import Row
from influence_trace.report.html import PAGE_SIZE, build_report

from tests.report.browser import Page
from tests.report.runs import random_rows, write_run, write_validation

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium (scripts/setup.sh)"),
]

NASTY_PROMPT = "</script><b>p-x</b>"


def ids_of(*words: str) -> tuple[int, ...]:
    vocab = build_tokenizer().get_vocab()
    return tuple(vocab[w] for w in words)


def marked_rows() -> list[Row]:
    """60 random responses plus a group whose tokens and scores are chosen by hand."""
    rows = random_rows(n_prompts=10, per_prompt=6, tokens=20)
    words = ("the", "answer", "is", "five")
    rows.append(Row(NASTY_PROMPT, "hi", 1.0, 0.5, True, ids_of(*words), np.array([0.1, 9.0, 0.0, 0.2])))
    rows.append(Row(NASTY_PROMPT, "lo", 0.0, -0.5, False, ids_of("one", "minus", "two", "zero"),
                    np.array([-0.1, -9.0, np.nan, 0.1])))
    return rows


@pytest.fixture(scope="module")
def page(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("report")
    run = write_run(tmp / "run", marked_rows(), model_path=str(tiny_model_dir))
    write_validation(run, subsets=12, lds=0.875)
    report = build_report(run, tmp / "report.html")
    with Page(tmp / "profile") as p:
        p.load(report.as_uri())
        p.report = report  # type: ignore[attr-defined]  # set on the page object by the fixture
        yield p


def choose(page: Page, select_id: str, value: str) -> None:
    """Pick an option the way a user does: set the value and fire the change event."""
    page.eval(f"(s => {{ s.value = {value!r}; s.dispatchEvent(new Event('change')); }})"
              f"(document.getElementById({select_id!r}))")


def shown(page: Page) -> int:
    return page.eval("document.querySelectorAll('#responses .resp').length")


def rgb(page: Page, selector_js: str) -> tuple[int, ...]:
    colour = page.eval(f"getComputedStyle({selector_js}).backgroundColor")
    return tuple(int(v) for v in re.findall(r"\d+", colour)[:3])


def response_el(response_id: str) -> str:
    """JS for the shown response element with this id (its header reads '... response ID ...')."""
    needle = f"response {response_id} "
    return f"[...document.querySelectorAll('.resp')].find(e => e.textContent.includes({needle!r}))"


def token_span(response_id: str, word: str) -> str:
    return f"{response_el(response_id)}.querySelector('.tok[title^=\"{word} :\"]')"


def test_first_page_and_paging(page: Page) -> None:
    total = 62
    assert shown(page) == PAGE_SIZE
    assert f"of {total}" in page.eval("document.getElementById('p-info').textContent")
    page.eval("document.getElementById('p-next').click()")
    assert shown(page) == total - PAGE_SIZE
    page.eval("document.getElementById('p-prev').click()")
    assert shown(page) == PAGE_SIZE


def test_filter_by_prompt_and_sort(page: Page) -> None:
    choose(page, "f-prompt", NASTY_PROMPT)
    assert shown(page) == 2
    choose(page, "f-sort", "asc")
    first = page.eval("document.querySelector('.resp header').textContent")
    assert "rejected" in first and "response lo " in first
    choose(page, "f-class", "acc")
    assert shown(page) == 1 and page.eval("document.querySelectorAll('#responses .resp.acc').length") == 1
    choose(page, "f-prompt", "")
    assert shown(page) == 31  # every accepted response
    choose(page, "f-class", "all")
    assert shown(page) == PAGE_SIZE


def test_token_colours_follow_scores(page: Page) -> None:
    choose(page, "f-prompt", NASTY_PROMPT)
    red = rgb(page, token_span("hi", "answer"))
    blue = rgb(page, token_span("lo", "minus"))
    assert red[0] > 150 and red[2] < 80, red
    assert blue[2] > 150 and blue[0] < 80, blue
    neutral = rgb(page, token_span("hi", "is"))
    assert min(neutral) > 240, neutral  # score 0 is white
    assert page.eval(f"{token_span('lo', 'two')}.classList.contains('nos')")  # NaN: no score


def test_text_is_escaped_and_words_decoded(page: Page) -> None:
    options = page.eval("[...document.querySelectorAll('#f-prompt option')].map(o => o.textContent)")
    assert NASTY_PROMPT in options
    # its own filter: pytest-xdist may run this test on a worker whose page never chose the prompt
    choose(page, "f-class", "all")
    choose(page, "f-prompt", NASTY_PROMPT)
    assert page.eval("document.querySelectorAll('#responses b').length") == 0
    assert "the answer is five" in page.eval(f"{response_el('hi')}.textContent")


def test_validation_scatter_shows_every_subset_and_the_lds(page: Page) -> None:
    assert page.eval("document.querySelectorAll('svg.scatter circle').length") == 12
    assert "LDS 0.875" in page.eval("document.querySelector('svg.scatter').textContent")
    box = page.eval("(r => [r.width, r.height])"
                    "(document.querySelector('svg.scatter').getBoundingClientRect())")
    assert min(box) > 100  # drawn, not collapsed


def test_the_first_screen_shows_responses_the_random_model_note_and_one_colour_code(page: Page) -> None:
    """Opened at the top, the first responses are within the first 1,400 px (the configuration table
    of about 45 rows used to push them off a 1400x2000 screenshot); the note says the model is random;
    accepted/rejected cards are green/purple, never the red/blue of the token scores."""
    choose(page, "f-prompt", "")
    choose(page, "f-class", "all")
    top = page.eval("document.querySelector('#responses .resp').getBoundingClientRect().top + window.scrollY")
    assert top < 1400, top
    assert "random weights" in page.eval("document.querySelector('p.note').textContent")
    border = page.eval("getComputedStyle(document.querySelector('.resp.rej')).borderLeftColor")
    assert border == "rgb(123, 50, 148)", border


def test_no_console_errors_and_no_requests(page: Page) -> None:
    assert page.errors() == []
    assert page.requests() == [page.report.as_uri()]  # type: ignore[attr-defined]  # set on the page object by the fixture


def test_screenshot(page: Page) -> None:
    page.eval("window.scrollTo(0, document.getElementById('responses').offsetTop - 120)")
    shot = page.screenshot(page.report.with_name("report.png"))  # type: ignore[attr-defined]  # set on the page object by the fixture
    assert shot.stat().st_size > 10_000
    assert page.report.stat().st_size < 200_000  # type: ignore[attr-defined]  # set on the page object by the fixture

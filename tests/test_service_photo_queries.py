"""The photo queries through the HTTP service and its page: exclusion, text + image,
folder and date filters, date order, a score cut-off, the folder list and duplicate
groups; the page's controls driven in headless Chromium."""
import os
import shutil
from pathlib import Path

import httpx
import pytest

from test_photo_queries import build_photo_index, two_years
from test_service import ARTIFACTS, _chromium, _free_port, _start


@pytest.fixture(scope="module")
def library_server(tiny_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("served") / "Pictures"
    two_years(root, 4, 2023)
    shutil.copy(root / "2021" / "a0.jpg", root / "2023" / "copy-of-a0.jpg")  # a planted exact copy
    idx = build_photo_index(tiny_model, root)
    port = _free_port()
    proc = _start(["--index", str(idx)], port)
    yield f"http://127.0.0.1:{port}", root
    proc.terminate()
    proc.wait(10)


def test_query_forms_over_http(library_server):
    url, root = library_server
    get = lambda **p: httpx.get(f"{url}/api/search/text", params=p, timeout=60)  # noqa: E731
    everything = get(q="a red circle", k=9).json()["results"]
    assert len(everything) == 9 and all(h["score"] is not None for h in everything)
    under = get(q="a red circle", k=9, under=str(root / "2021")).json()["results"]
    assert sorted(Path(h["key"]).name for h in under) == ["a0.jpg", "a1.jpg", "a2.jpg", "a3.jpg"]
    dated = get(q="a red circle", k=9, after="2023-02-01", before="2023-04-01").json()["results"]
    assert sorted(Path(h["key"]).name for h in dated) == ["b1.jpg", "b2.jpg"]
    newest = get(q="a red circle", k=9, sort="date").json()
    dates = [h["extra"]["date"] for h in newest["results"]]
    assert newest["sort"] == "date" and dates == sorted(dates, reverse=True)
    cut = sorted(h["score"] for h in everything)[4]
    assert [h["id"] for h in get(q="a red circle", k=9, min_score=cut).json()["results"]] == \
        [h["id"] for h in everything if h["score"] >= cut]
    pushed = httpx.get(f"{url}/api/search/text", params=[("q", "a red circle"), ("k", 9), ("not", "a blue square"),
                                                         ("not", "a green star"), ("not_weight", 1.0)]).json()
    assert {h["id"] for h in pushed["results"]} == {h["id"] for h in everything}  # same photos, another order
    assert [h["id"] for h in pushed["results"]] != [h["id"] for h in everything]
    for bad, words in (({"after": "soon"}, "not a date"), ({"sort": "size"}, "sort"), ({"min_score": 3}, "min_score"),
                       ({"target": "text", "under": str(root)}, "captions")):
        r = get(q="a red circle", **bad)
        assert r.status_code == 422 and words in r.json()["error"], r.text
    query = (root / "2021" / "a1.jpg").read_bytes()
    image = lambda **p: httpx.post(f"{url}/api/search/image", params={"target": "image", "k": 9, **p},  # noqa: E731
                                   files={"file": ("q.jpg", query, "image/jpeg")}, timeout=60).json()["results"]
    alone = image()
    assert Path(alone[0]["key"]).name == "a1.jpg"
    assert [h["id"] for h in image(q="a red circle", mix=1.0)] == [h["id"] for h in alone]
    assert [h["id"] for h in image(q="a red circle", mix=0.0)] == [h["id"] for h in everything]
    assert {Path(h["key"]).name for h in image(under=str(root / "2023"))} == \
        {"b0.jpg", "b1.jpg", "b2.jpg", "b3.jpg", "copy-of-a0.jpg"}


def test_folders_and_duplicates_over_http(library_server):
    url, root = library_server
    folders = httpx.get(f"{url}/api/folders").json()["folders"]
    assert folders == [{"folder": str(root / "2021"), "count": 4}, {"folder": str(root / "2023"), "count": 5}]
    dups = httpx.get(f"{url}/api/duplicates").json()
    assert dups["total_groups"] == 1
    assert sorted(Path(k).name for k in dups["groups"][0]["keys"]) == ["a0.jpg", "copy-of-a0.jpg"]


def test_photo_query_controls_in_headless_chromium(library_server):
    url, root = library_server
    exe = _chromium()
    if os.environ.get("CROSSMODAL_REQUIRE_BROWSER") == "1":
        import playwright.sync_api as playwright
        assert exe is not None, "Chromium is required by `make test` (scripts/ensure_chromium.sh installs it)"
    else:
        playwright = pytest.importorskip("playwright.sync_api", reason="playwright comes with the test extras")
        if exe is None:
            pytest.skip("Debian's chromium is not installed (`make test` installs it)")
    ARTIFACTS.mkdir(exist_ok=True)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=["--headless", "--no-sandbox", "--disable-gpu"])
        page = browser.new_page()
        page.goto(url + "/")
        page.wait_for_function("document.getElementById('under').options.length == 3")
        page.fill("#q", "a red circle")
        page.press("#q", "Enter")
        page.wait_for_selector(".card.result")
        assert page.locator(".card.result").count() == 9
        scores = [float(s) for s in page.locator(".card.result .score").all_text_contents()]
        assert len(scores) == 9 and scores == sorted(scores, reverse=True)  # the order the label shows
        page.select_option("#under", str(root / "2021"))
        page.press("#q", "Enter")
        page.wait_for_function("document.querySelectorAll('.card.result').length == 4")
        assert all("/2021/" in t for t in page.locator(".card.result .meta").all_text_contents())
        page.select_option("#under", "")
        page.fill("#after", "2023-02-01")
        page.select_option("#sort", "date")
        page.press("#q", "Enter")
        page.wait_for_function("document.querySelectorAll('.card.result').length == 3")
        dates = page.locator(".card.result .date").all_text_contents()
        assert dates == ["2023-04-15", "2023-03-15", "2023-02-15"]
        page.fill("#after", "")
        page.fill("#not", "a blue square, a green star")
        page.press("#q", "Enter")
        page.wait_for_function("document.querySelectorAll('.card.result').length == 9")
        page.screenshot(path=str(ARTIFACTS / "photo_queries.png"), full_page=True)
        # an uploaded photo with the text box filled: one query of both ("like this, but ...")
        page.fill("#not", "")
        page.set_input_files("#file", str(root / "2021" / "a1.jpg"))
        page.wait_for_selector("h2 .combined")
        assert "a red circle" in page.text_content("h2 .combined") and page.locator(".card.result").count() == 8
        page.click("#dup-button")
        page.wait_for_selector(".dup-group")
        assert page.locator(".dup-group").count() == 1 and page.locator(".dup-group img").count() == 2
        page.screenshot(path=str(ARTIFACTS / "duplicates.png"), full_page=True)
        browser.close()

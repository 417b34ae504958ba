"""The HTTP service as a real server process on loopback: every endpoint, every safety
rule; and the web page in headless Chromium."""
import io
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

from crossmodal.cli import main
from crossmodal.data import load_prepared

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(args, port):
    proc = subprocess.Popen([sys.executable, "-m", "crossmodal.cli", "serve", "--port", str(port), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stdout.read()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError("server did not start")


@pytest.fixture(scope="module")
def indexes(tiny_model, tiny_data, feature_cache_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    out = []
    for bits in (32, 64):
        d = root / f"idx{bits}"
        assert main(["index", "build", "--model", str(tiny_model), "--data", str(tiny_data), "--split", "test",
                     "--bits", str(bits), "--cache-dir", str(feature_cache_dir), "--out", str(d)]) == 0
        out.append(d)
    return out


@pytest.fixture(scope="module")
def server(indexes):
    port = _free_port()
    proc = _start([a for d in indexes for a in ("--index", str(d))] +
                  ["--allow-writes", "--write-token", "s3cret", "--max-upload-mb", "0.05"], port)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="module")
def readonly_server(indexes, tmp_path_factory):
    copy = tmp_path_factory.mktemp("ro") / "idx"
    shutil.copytree(indexes[1], copy)
    port = _free_port()
    proc = _start(["--index", str(copy)], port)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(10)


def _png(colour=(220, 40, 40), size=64) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buf, format="PNG")
    return buf.getvalue()


def test_health_stats_and_openapi(server):
    assert httpx.get(f"{server}/api/health").json() == {"status": "ok"}
    stats = httpx.get(f"{server}/api/stats").json()
    assert stats["bits"] == [32, 64] and stats["indexes"]["64"]["counts"] == {"image": 16, "text": 80}
    schema = httpx.get(f"{server}/openapi.json").json()
    assert {"/api/search/text", "/api/search/image", "/api/items/{item_id}", "/api/thumbnails/{item_id}",
            "/api/health", "/api/stats"} <= set(schema["paths"])


def test_text_search_to_images_and_captions_with_bits_choice(server, tiny_data):
    caption = load_prepared(tiny_data)["test"][0]["captions"][0]
    r = httpx.get(f"{server}/api/search/text", params={"q": caption, "k": 5})
    assert r.status_code == 200
    body = r.json()
    assert body["bits"] == 64 and len(body["results"]) == 5 and body["results"][0]["modality"] == "image"
    # two-stage search: the order is the re-ranked score's (the Hamming distance is a detail that
    # need not be monotonic in it)
    scores = [h["score"] for h in body["results"]]
    assert scores == sorted(scores, reverse=True) and all(h["distance"] is not None for h in body["results"])
    r32 = httpx.get(f"{server}/api/search/text", params={"q": caption, "k": 5, "target": "text", "bits": 32}).json()
    assert r32["bits"] == 32 and all(h["modality"] == "text" and h["source"] for h in r32["results"])
    assert httpx.get(f"{server}/api/search/text", params={"q": "x", "bits": 16}).status_code == 400
    moments = httpx.get(f"{server}/api/search/text", params={"q": caption, "target": "moments"})
    assert moments.status_code == 200 and moments.json()["results"] == []  # no videos in this index


def test_image_upload_search_item_and_thumbnail(server):
    r = httpx.post(f"{server}/api/search/image", params={"target": "text", "k": 3},
                   files={"file": ("q.png", _png(), "image/png")})
    assert r.status_code == 200 and len(r.json()["results"]) == 3
    r = httpx.post(f"{server}/api/search/image", params={"target": "image", "k": 2},
                   files={"file": ("q.png", _png(), "image/png")})
    hit = r.json()["results"][0]
    item = httpx.get(f"{server}/api/items/{hit['id']}").json()
    assert item["key"] == hit["key"] and item["modality"] == "image"
    thumb = httpx.get(f"{server}/api/thumbnails/{hit['id']}")
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(thumb.content)).size[0] <= 192
    text_hit = httpx.get(f"{server}/api/search/text", params={"q": "a red circle", "target": "text"}).json()
    assert httpx.get(f"{server}/api/thumbnails/{text_hit['results'][0]['id']}").status_code == 404  # no image
    assert httpx.get(f"{server}/api/items/12345").status_code == 404
    assert httpx.get(f"{server}/api/thumbnails/12345").json() == {"error": "no such item"}


def test_safety_rules(server):
    big = _png(size=400) + b"\0" * 60000
    r = httpx.post(f"{server}/api/search/image", files={"file": ("big.png", big, "image/png")})
    assert r.status_code == 413 and "larger than" in r.json()["error"]
    r = httpx.post(f"{server}/api/search/image", files={"file": ("notes.txt", b"hello", "text/plain")})
    assert r.status_code == 400 and "not an image" in r.json()["error"]
    r = httpx.get(f"{server}/api/search/text", params={"q": "x" * 501})
    assert r.status_code == 422 and "error" in r.json()
    for path in ["/api/thumbnails/..%2F..%2Fetc%2Fpasswd", "/static/..%2F..%2Fservice.py", "/static/%2e%2e/x",
                 "/api/items/..%252F..%252Fetc", "/etc/passwd", "/static/index.html/../../../pyproject.toml"]:
        raw = httpx.Request("GET", server + path)
        r = httpx.Client().send(raw)
        assert r.status_code == 404, path
        assert "root:" not in r.text and "import" not in r.text


def test_writes_need_the_token(server, readonly_server):
    body = {"texts": ["a brand new caption about a purple star"]}
    assert httpx.post(f"{readonly_server}/api/index/texts", json=body,
                      headers={"Authorization": "Bearer s3cret"}).status_code == 403
    assert httpx.post(f"{server}/api/index/texts", json=body).status_code == 401
    assert httpx.post(f"{server}/api/index/texts", json=body, headers={"Authorization": "Bearer nope"}).status_code == 401
    r = httpx.post(f"{server}/api/index/texts", json=body, headers={"Authorization": "Bearer s3cret"})
    assert r.status_code == 200 and r.json()["added"] == 1
    found = httpx.get(f"{server}/api/search/text", params={"q": body["texts"][0], "target": "text", "k": 1}).json()
    assert found["results"][0]["source"] == body["texts"][0]


def test_concurrent_requests_are_batched(server):
    from concurrent.futures import ThreadPoolExecutor

    before = httpx.get(f"{server}/api/stats").json()["batching"]
    with ThreadPoolExecutor(16) as ex:
        codes = list(ex.map(lambda i: httpx.get(f"{server}/api/search/text", params={"q": f"a red circle {i}"},
                                                timeout=60).status_code, range(48)))
    assert codes == [200] * 48
    after = httpx.get(f"{server}/api/stats").json()["batching"]
    items = sum(v["items"] for v in after.values()) - sum(v["items"] for v in before.values())
    batches = sum(v["batches"] for v in after.values()) - sum(v["batches"] for v in before.values())
    assert items == 48 and batches < 48  # some queries shared a forward pass


def _chromium():
    for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser"):
        if os.path.exists(p):
            return p
    return None


def test_web_page_in_headless_chromium(server, tiny_data):
    exe = _chromium()
    if os.environ.get("CROSSMODAL_REQUIRE_BROWSER") == "1":  # `make test`: the browser is part of the checks
        import playwright.sync_api as playwright
        assert exe is not None, "Chromium is required by `make test` (scripts/ensure_chromium.sh installs it)"
    else:
        playwright = pytest.importorskip("playwright.sync_api", reason="playwright comes with the test extras")
        if exe is None:
            pytest.skip("Debian's chromium is not installed (`make test` installs it; this run was `make "
                        "test-no-browser` or plain pytest)")
    caption = load_prepared(tiny_data)["test"][3]["captions"][0]
    ARTIFACTS.mkdir(exist_ok=True)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        page = browser.new_page()
        page.goto(server + "/")
        page.wait_for_function("document.getElementById('bits').options.length == 2")
        assert "16 images" in page.text_content("#stats")
        page.click("#search-button")  # empty query: a friendly error, no request
        assert "Type something" in page.text_content("#status")
        page.fill("#q", caption)
        page.press("#q", "Enter")
        page.wait_for_selector(".card.result img")
        page.wait_for_function("Array.from(document.querySelectorAll('.card img')).every(i => i.complete && i.naturalWidth > 0)")
        assert page.locator(".card.result").count() == 12
        page.screenshot(path=str(ARTIFACTS / "text_search.png"), full_page=True)
        img_path = ARTIFACTS / "query.png"
        load_prepared(tiny_data)["test"][3]["image"].save(img_path)
        page.set_input_files("#file", str(img_path))
        page.wait_for_selector("li.caption")
        assert page.locator("li.caption").count() == 8
        assert page.locator(".card.result").count() == 8
        page.screenshot(path=str(ARTIFACTS / "image_search.png"), full_page=True)
        page.select_option("#target", "moments")
        page.press("#q", "Enter")
        page.wait_for_selector("p.empty")
        assert "video moments" in page.text_content("#results")
        browser.close()

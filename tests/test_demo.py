"""The Gradio demo, really served: gradio_client over HTTP, a headless Chromium, the CLI as a subprocess.

The server runs in this test process on a free local port, on the session's exported model. The
browser test saves a screenshot to ``tmp_path`` and copies it to ``$PRNSEG_TEST_ARTIFACTS``
(default ``test-artifacts/`` in the repository root).
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import PIL.Image  # noqa: E402
import pytest  # noqa: E402

from conftest import default_sigint, run_cli  # noqa: E402
from prnseg.image_io import read_image, read_label, write_image  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MAX_PIXELS = 300_000
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def palette_ids(path) -> np.ndarray:
    """The stored indices of a palette PNG (OpenCV would expand them to colours)."""
    with PIL.Image.open(path) as im:
        assert im.mode == "P", f"{path} is {im.mode}, expected a palette PNG"
        return np.array(im)


@pytest.fixture(scope="module")
def predictor(exported_model):
    from prnseg.serve import Predictor

    return Predictor(exported_model, backend="onnxruntime", device="cpu")


@pytest.fixture(scope="module")
def demo_app(exported_model, tmp_path_factory):
    from prnseg.demo.app import build_app, launch

    app = build_app(exported_model, max_pixels=MAX_PIXELS, backend="onnxruntime", device="cpu",
                    workdir=tmp_path_factory.mktemp("demo-downloads"))
    launch(app, host="127.0.0.1", port=free_port(), prevent_thread_lock=True, quiet=True)
    yield app
    app.close()


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """A bundled example, an odd-sized PNG (no bucket fits it exactly), and three bad uploads."""
    from prnseg.demo.uploads import example_images

    d = tmp_path_factory.mktemp("demo-images")
    example = example_images()[0]
    odd = d / "odd size.png"
    write_image(odd, read_image(example_images()[-1])[10:210, 40:340])
    (d / "notes.txt").write_text("not an image\n")
    (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(300))
    write_image(d / "huge.png", np.zeros((600, 600, 3), dtype=np.uint8))
    return {"example": example, "odd": odd, "txt": d / "notes.txt", "broken": d / "broken.png",
            "huge": d / "huge.png"}


def test_bundled_examples_are_small_day_and_night_images():
    from prnseg.demo.uploads import example_images

    ex = example_images()
    assert [p.stem.split("_")[0] for p in ex] == ["day", "day", "night", "night"]
    for p in ex:
        assert p.stat().st_size < 150_000
        assert read_image(p).shape == (256, 512, 3)


def test_views_and_class_table_on_known_planes():
    from prnseg.demo import render
    from prnseg.labels import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE

    label = np.array([[0, 0, 0, 13], [0, 0, 10, 13]], dtype=np.uint8)
    raw = np.array([[0, 1, 0, 13], [0, 0, 10, 10]], dtype=np.uint8)
    conf = np.array([[255, 51, 102, 255], [204, 153, 0, 255]], dtype=np.uint8)
    noisy = np.array([[0, 1, 0, 0], [0, 0, 1, 1]], dtype=bool)
    rows = render.class_rows(label, conf, noisy, CITYSCAPES_CLASSES)
    assert [(r.name, r.pixel_share) for r in rows] == [("road", 5 / 8), ("car", 2 / 8), ("sky", 1 / 8)]
    assert rows[0].mean_confidence == pytest.approx((255 + 51 + 102 + 204 + 153) / 5 / 255)
    assert [r.noisy_share for r in rows] == [pytest.approx(1 / 5), 0.5, 1.0]
    masks = render.class_masks(label, CITYSCAPES_CLASSES, 0.7)
    assert [n for _, n in masks] == ["road", "sky", "car"]
    np.testing.assert_array_equal(masks[2][0], (label == 13) * np.float32(0.7))
    rgb = np.full((2, 4, 3), 200, dtype=np.uint8)
    diff = render.difference_view(rgb, raw, label, CITYSCAPES_PALETTE)
    assert tuple(diff[0, 1]) == tuple(CITYSCAPES_PALETTE[0]) and tuple(diff[1, 3]) == tuple(CITYSCAPES_PALETTE[13])
    assert tuple(diff[0, 0]) in ((90, 90, 90), (255, 255, 255))
    heat = render.confidence_heatmap(conf)
    assert heat.shape[1] == 4 and heat.shape[0] > 2 and heat.dtype == np.uint8
    # a model whose confidence sits near 0.07 still spans the whole colour map
    low = np.array([[15, 16, 17, 18, 19, 20]] * 20, dtype=np.uint8)
    assert render.confidence_range(low) == pytest.approx((15 / 255, 20 / 255), abs=1 / 255)
    heat = render.confidence_heatmap(low)[:20]
    inferno = cv2.cvtColor(cv2.applyColorMap(np.array([[0, 255]], np.uint8), cv2.COLORMAP_INFERNO),
                           cv2.COLOR_BGR2RGB)[0]
    assert tuple(heat[0, 0]) == tuple(inferno[0]) and tuple(heat[0, 5]) == tuple(inferno[1])
    assert render.confidence_range(np.full((4, 4), 200, np.uint8)) == pytest.approx((199 / 255, 200 / 255))
    assert render.display_size(3000, 6000) == (640, 1280) and render.display_size(100, 50) == (100, 50)


@pytest.mark.slow
def test_client_labels_match_predictor_and_bad_uploads_are_messages(demo_app, predictor, images, tmp_path):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    client = Client(demo_app.local_url, verbose=False, download_files=str(tmp_path / "dl"))
    for key in ("example", "odd"):
        res = client.predict(handle_file(str(images[key])), 0.5, 0.3, api_name="/segment")
        annotated, noise_view, compare, diff, heat, table, status, noise_png, label_png = res
        expected = predictor.predict([read_image(images[key])])[0]
        np.testing.assert_array_equal(palette_ids(label_png), expected.label)
        np.testing.assert_array_equal(read_label(noise_png), expected.noise_at(0.3).astype(np.uint8) * 255)
        present = {predictor.spec.classes[c] for c in np.unique(expected.label)}
        assert {a["label"] for a in annotated["annotations"]} == present
        assert {row[0] for row in table["data"]} == present
        assert sum(row[1] for row in table["data"]) == pytest.approx(100, abs=0.1)
        assert images[key].name in status and "ms" in status and "threshold 0.30" in status
        h, w = expected.label.shape
        assert read_image(heat).shape[1] == w and read_image(diff).shape[:2] == (h, w)

    single = {}
    for key, message in (("txt", "notes.txt: wrong file type ('.txt')"),
                         ("broken", "broken.png: not a readable image"),
                         ("huge", "huge.png: image too large (600 x 600 = 0.4 MP")):
        with pytest.raises(AppError) as err:
            client.predict(handle_file(str(images[key])), 0.5, 0.5, api_name="/segment")
        assert message in str(err.value) and "Traceback" not in str(err.value)
        single[key] = str(err.value)
        good = client.predict(handle_file(str(images["example"])), 0.5, 0.5, api_name="/segment")
        np.testing.assert_array_equal(palette_ids(good[8]), predictor.predict([read_image(images["example"])])[0].label)

    gallery, noise_gallery, table, status, archive = client.predict(
        [handle_file(str(images[k])) for k in ("example", "txt", "broken", "odd")], api_name="/segment_batch")
    assert [g["caption"] for g in gallery] == [images["example"].name, images["odd"].name]
    assert len(noise_gallery) == 2
    assert [row[0] for row in table["data"]] == [images[k].name for k in ("example", "txt", "broken", "odd")]
    assert [row[2] for row in table["data"]] == ["ok", "error: notes.txt: wrong file type ('.txt'); upload a PNG, "
                                                 "JPG, WEBP, BMP, TIFF image", "error: " + single["broken"], "ok"]
    assert "**2** image(s) segmented, **2** rejected" in status
    with zipfile.ZipFile(archive) as zf:
        assert sorted(zf.namelist()) == ["labels/day_1.png", "labels/odd size.png", "noise/day_1.png",
                                         "noise/odd size.png"]
        zf.extractall(tmp_path / "zip")
    for key, stem in (("example", "day_1"), ("odd", "odd size")):
        expected = predictor.predict([read_image(images[key])])[0]
        np.testing.assert_array_equal(palette_ids(tmp_path / "zip" / "labels" / f"{stem}.png"), expected.label)
        np.testing.assert_array_equal(read_label(tmp_path / "zip" / "noise" / f"{stem}.png") > 0,
                                      expected.noise_at(predictor.spec.noise_threshold))


@pytest.mark.slow
def test_sliders_rerender_the_cached_prediction(demo_app, predictor, images):
    core = demo_app.prnseg_core
    calls = []
    real = core.predictor.predict
    core.predictor.predict = lambda imgs: calls.append(len(imgs)) or real(imgs)
    try:
        *views, label_file, key = core.segment(str(images["odd"]), 0.4, 0.5)
        state = core.sessions.get(key)
        for t in (0.0, 0.2, 0.9, 1.0):
            annotated, noise_view, compare, diff, heat, table, status, noise_file = core.render(key, 0.8, t)
            expected = state["pred"].noise_at(t)
            np.testing.assert_array_equal(read_label(noise_file) > 0, expected)
            assert f"threshold {t:.2f}" in status and f"{100 * expected.mean():.2f} %" in status
            assert all(float(m.max()) == pytest.approx(0.8) for m, _ in annotated[1])
    finally:
        core.predictor.predict = real
    assert calls == [1]
    assert state["pred"].noise_at(0.0).all()


def test_an_upload_whose_header_cannot_be_read_is_refused_without_decoding(tmp_path, monkeypatch):
    """A Radiance HDR image named .png: PIL cannot read its header, OpenCV decodes it in full. The
    demo refuses it from the header alone and never calls the decoder."""
    import PIL.Image

    from prnseg.demo.uploads import DemoInputError, read_upload

    ok, data = cv2.imencode(".hdr", np.full((64, 96, 3), 0.5, np.float32))
    bad = tmp_path / "scene.png"
    bad.write_bytes(data.tobytes())
    assert cv2.imdecode(data, cv2.IMREAD_UNCHANGED).shape == (64, 96, 3)
    with pytest.raises(PIL.UnidentifiedImageError):
        PIL.Image.open(bad)
    decodes = []
    real = cv2.imdecode
    monkeypatch.setattr(cv2, "imdecode", lambda *a: decodes.append(1) or real(*a))
    with pytest.raises(DemoInputError) as err:
        read_upload(bad, MAX_PIXELS)
    assert str(err.value) == ("scene.png: not a readable image (its header is damaged, or it is not really .png); "
                              "upload a valid PNG, JPG, WEBP, BMP, TIFF image")
    assert decodes == []
    good = tmp_path / "street.png"
    write_image(good, np.full((64, 96, 3), 90, dtype=np.uint8))
    assert read_upload(good, MAX_PIXELS).shape == (64, 96, 3) and decodes == [1]


def test_session_store_is_capped_in_count_bytes_and_age():
    from prnseg.demo.sessions import SessionStore

    now = [0.0]
    store = SessionStore(max_items=3, max_bytes=1000, max_age_s=60, clock=lambda: now[0])
    for i in range(4):
        store.put(f"k{i}", np.zeros(100, np.uint8), 100)
    assert store.get("k0") is None and store.get("k3") is not None and len(store) == 3
    store.put("big", np.zeros(950, np.uint8), 950)
    assert [k for k in ("k1", "k2", "k3", "big") if store.get(k) is not None] == ["big"]
    assert store.nbytes == 950
    now[0] = 61.0
    assert store.get("big") is None and len(store) == 0 and store.nbytes == 0


@pytest.mark.slow
def test_an_evicted_result_asks_for_segment_again(exported_model, images, tmp_path):
    from prnseg.demo.app import SessionStore, build_app
    from prnseg.serve import Predictor

    store = SessionStore(max_items=1, max_bytes=1 << 30, max_age_s=3600)
    app = build_app(Predictor(exported_model, backend="onnxruntime", device="cpu"), max_pixels=MAX_PIXELS,
                    warm_up=False, workdir=tmp_path, sessions=store)
    core = app.prnseg_core
    first = core.segment(str(images["example"]), 0.5, 0.5)[-1]
    second = core.segment(str(images["odd"]), 0.5, 0.5)[-1]
    assert core.render(second, 0.5, 0.5)[6].startswith("**odd size.png**")
    assert core.render(first, 0.5, 0.5)[6] == "This result is no longer kept on the server; press **Segment** again."


@pytest.mark.slow
def test_label_source_wording_and_small_image_note(exported_model, noise_only_model, tmp_path):
    from prnseg.demo.app import build_app, explanation
    from prnseg.serve import Predictor

    tiny = tmp_path / "one pixel.png"
    write_image(tiny, np.full((1, 1, 3), 128, dtype=np.uint8))
    texts = {}
    for name, model in (("refined", exported_model), ("noise_only", noise_only_model)):
        core = build_app(Predictor(model, backend="onnxruntime", device="cpu"), max_pixels=MAX_PIXELS,
                         warm_up=False, workdir=tmp_path / name).prnseg_core
        *_, key = core.segment(str(tiny), 0.5, 0.5)
        texts[name] = (core.label_title, core.render(key, 0.5, 0.5)[6], explanation(core), core.refines)
    title, status, explain, refines = texts["noise_only"]
    assert not refines and title == "Segmentation (the teacher's labels; this model does not refine them)"
    assert "Labels are the teacher's (this model does not refine them)" in status and "relabelled" not in status
    assert "does not refine its labels" in explain and "no PRN-changes view" in explain
    title, status, explain, refines = texts["refined"]
    assert refines and title == "Refined segmentation (the PRN's labels)"
    assert "The PRN relabelled **" in status and "**PRN changes**" in explain
    assert "`--noise-from confidence`" in explain   # a PRN model exported with the default noise source
    tta = build_app(Predictor(exported_model, backend="onnxruntime", device="cpu", tta=True), max_pixels=MAX_PIXELS,
                    warm_up=False, workdir=tmp_path / "tta").prnseg_core
    *_, key = tta.segment(str(tiny), 0.5, 0.5)
    texts["tta"] = (tta.label_title, tta.render(key, 0.5, 0.5)[6], explanation(tta), tta.refines)
    title, status, explain, refines = texts["tta"]
    assert refines and tta.changes_title == "TTA changes" and tta.noise_threshold == 0.5
    assert title == ("Segmentation (the teacher averaged over 3 scales and their mirrors, rare classes "
                     "logit-adjusted (tau 0.25))")
    assert "Averaging relabelled **" in status and "noise from 1 − averaged confidence" in status
    assert "(default 0.50;" in status and "**TTA changes**" in explain and "logit adjustment, tau 0.25" in explain
    for _, status, _, _ in texts.values():
        assert ("⚠ This image is far smaller than the model's input (128 × 256 px): it is upscaled 128×, so the "
                "result says little about it.") in status


@pytest.mark.slow
def test_browser_explains_runs_an_example_on_click_and_keeps_errors(demo_app, noise_only_model, images,
                                                                     tmp_path_factory):
    """Headless Chromium: the explanation panel, an example that runs on click (downloads appear
    only then), an upload error still in the page 20 s later, and the wording for a model that
    does not refine its labels. Screenshots go to test-artifacts/."""
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="playwright is not installed (pip install playwright; no browser download)")
    chromium = os.environ.get("PRNSEG_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).is_file():
        pytest.skip(f"no Chromium at {chromium} (apt-get install chromium, or set PRNSEG_CHROMIUM)")
    from prnseg.demo.app import build_app, launch

    classes = set(demo_app.prnseg_core.classes)
    shots = tmp_path_factory.mktemp("artifacts")
    noise_only = build_app(noise_only_model, max_pixels=MAX_PIXELS, backend="onnxruntime", device="cpu",
                           workdir=tmp_path_factory.mktemp("noise-only-downloads"))
    launch(noise_only, host="127.0.0.1", port=free_port(), prevent_thread_lock=True, quiet=True)
    local = (demo_app.local_url.rstrip("/"), noise_only.local_url.rstrip("/"))
    external: list[str] = []

    def local_only(route):
        if route.request.url.startswith(local):
            route.continue_()
        else:
            external.append(route.request.url)
            route.abort()

    try:
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1300})
                page.route("**/*", local_only)
                page.goto(demo_app.local_url, wait_until="domcontentloaded", timeout=30_000)
                explain = page.locator("#explain")
                explain.wait_for(state="visible", timeout=30_000)
                assert "What am I looking at?" in explain.inner_text()
                assert "Noise mask" in explain.inner_text() and "PRN changes" in explain.inner_text()
                assert not page.locator("#label-file").is_visible()

                page.locator("#examples button.gallery-item").first.click()  # no Segment press
                page.locator("#segmentation img[alt='the base file that is annotated']").wait_for(
                    state="visible", timeout=30_000)
                page.wait_for_function("() => [...document.querySelectorAll('#segmentation img')]"
                                       ".every(i => i.complete && i.naturalWidth > 0)", timeout=15_000)
                legend = page.locator("#segmentation .legend-item")
                legend.first.wait_for(state="visible", timeout=15_000)
                names = {t.strip() for t in legend.all_inner_texts()}
                assert names and names <= classes
                status = page.locator("#status")
                assert "day_1.jpg" in status.inner_text() and "inference" in status.inner_text()
                page.locator("#label-file").wait_for(state="visible", timeout=15_000)
                page.screenshot(path=str(shots / "demo.png"), full_page=True)

                page.locator("#input-image input[type=file]").set_input_files(str(images["broken"]))
                page.get_by_text("Not usable: broken.png: not a readable image").wait_for(state="visible",
                                                                                          timeout=15_000)
                page.locator("#run").click()
                page.get_by_text("Not segmented: broken.png: not a readable image").wait_for(state="visible",
                                                                                             timeout=15_000)
                page.wait_for_timeout(20_000)
                assert "Not segmented: broken.png: not a readable image" in status.inner_text()
                assert page.locator(".toast-body").filter(has_text="broken.png: not a readable image").count() >= 1
                assert not page.locator("#label-file").is_visible()
                page.screenshot(path=str(shots / "demo-error.png"), full_page=True)

                page.goto(noise_only.local_url, wait_until="domcontentloaded", timeout=30_000)
                page.locator("#explain").wait_for(state="visible", timeout=30_000)
                assert "does not refine its labels" in page.locator("#explain").inner_text()
                page.get_by_text("Segmentation (the teacher's labels; this model does not refine them)").first.wait_for(
                    state="visible", timeout=15_000)
                assert page.get_by_role("tab", name="PRN changes").count() == 0
                page.locator("#examples button.gallery-item").nth(2).click()
                page.get_by_text("Labels are the teacher's (this model does not refine them)").wait_for(
                    state="visible", timeout=30_000)
                page.screenshot(path=str(shots / "demo-noise-only.png"), full_page=True)
            finally:
                browser.close()
    finally:
        noise_only.close()
    out = Path(os.environ.get("PRNSEG_TEST_ARTIFACTS") or REPO / "test-artifacts")
    out.mkdir(parents=True, exist_ok=True)
    for shot in ("demo.png", "demo-error.png", "demo-noise-only.png"):
        assert (shots / shot).stat().st_size > 10_000
        shutil.copy(shots / shot, out / shot)
    assert not [u for u in external if not u.startswith("data:")], f"the page reached outside: {external}"


def _start_cli(exported_model, port, tmp, *extra):
    """``prnseg demo`` as a subprocess with its own TMPDIR; returns (process, output lines up to "open")."""
    tmp.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "prnseg", "demo", "--model", str(exported_model),
                             "--port", str(port), "--backend", "onnxruntime", "--device", "cpu", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
                            env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "TMPDIR": str(tmp)},
                            preexec_fn=default_sigint)
    lines = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "prnseg demo: open" in line:
            break
    return proc, lines


@pytest.mark.slow
def test_cli_serves_the_model_and_stops_on_ctrl_c(exported_model, tmp_path):
    port = free_port()
    proc, lines = _start_cli(exported_model, port, tmp_path / "tmp")
    try:
        url = f"http://127.0.0.1:{port}/"
        assert any(url in line for line in lines), "".join(lines)
        assert not any("warning" in line for line in lines), "".join(lines)
        with urllib.request.urlopen(url, timeout=10) as resp:
            assert resp.status == 200 and b"prnseg demo" in resp.read()
        assert list((tmp_path / "tmp").glob("prnseg-demo-*"))
        busy = run_cli("demo", "--model", exported_model, "--port", port, "--device", "cpu", check=False, timeout=120)
        assert busy.returncode == 2
        assert busy.stderr.strip() == (f"prnseg demo: error: cannot serve on 127.0.0.1:{port} (the port is in use); "
                                       "pass a free --port or another --host")
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, "".join(lines) + rest
        assert not list((tmp_path / "tmp").glob("prnseg-demo-*"))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_cli_on_the_network_warns_asks_for_a_login_and_cleans_up_on_sigterm(exported_model, images, tmp_path):
    from gradio_client import Client, handle_file

    bad = run_cli("demo", "--model", exported_model, "--auth", "nopassword", check=False, timeout=120)
    assert bad.returncode == 2 and bad.stderr.strip() == (
        "prnseg demo: error: --auth: expected USER:PASS with a non-empty user name and password, e.g. "
        "--auth me:s3cret")
    port = free_port()
    proc, lines = _start_cli(exported_model, port, tmp_path / "tmp", "--host", "0.0.0.0", "--auth", "ana:s3cret")
    try:
        out = "".join(lines)
        assert ("prnseg demo: warning: --host 0.0.0.0 exposes the demo (and the model) to the network, behind "
                "--auth") in out, out
        url = f"http://127.0.0.1:{port}/"
        with pytest.raises(Exception):
            Client(url, verbose=False).predict(handle_file(str(images["example"])), 0.5, 0.5, api_name="/segment")
        client = Client(url, auth=("ana", "s3cret"), verbose=False, download_files=str(tmp_path / "dl"))
        res = client.predict(handle_file(str(images["example"])), 0.5, 0.5, api_name="/segment")
        assert images["example"].name in res[6]
        work = list((tmp_path / "tmp").glob("prnseg-demo-*"))
        assert work and any(work[0].rglob("*_label.png"))
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out + rest
        assert "prnseg demo: stopped" in rest
        assert not list((tmp_path / "tmp").glob("prnseg-demo-*"))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_cli_tta_serves_the_averaged_labels_and_refuses_a_tau_without_it(exported_model, images, tmp_path):
    from gradio_client import Client, handle_file

    bad = run_cli("demo", "--model", exported_model, "--logit-adjust", "0.5", check=False, timeout=120)
    assert bad.returncode == 2 and bad.stderr.strip() == (
        "prnseg demo: error: --logit-adjust adjusts the test-time augmented labels; add --tta (or drop it)")
    port = free_port()
    proc, lines = _start_cli(exported_model, port, tmp_path / "tmp", "--tta", "--logit-adjust", "0")
    try:
        out = "".join(lines)
        assert "test-time augmentation: segmenter.onnx at 3 scales and their mirrors)" in out, out
        client = Client(f"http://127.0.0.1:{port}/", verbose=False, download_files=str(tmp_path / "dl"))
        res = client.predict(handle_file(str(images["example"])), 0.5, 0.5, api_name="/segment")
        assert "Averaging relabelled **" in res[6] and "noise from 1 − averaged confidence" in res[6]
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out + rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cli_without_model_says_how_to_make_one(tmp_path):
    proc = run_cli("demo", check=False, cwd=tmp_path)
    assert proc.returncode == 2
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("prnseg demo: error: no model given")
    assert "prnseg quickstart" in err[0] and "prnseg export CHECKPOINT --out DIR" in err[0]

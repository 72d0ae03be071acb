"""report.html: a self-contained page, checked in a real (headless Chromium) browser against the study's files.

The browser is Debian's ``chromium`` with ``chromium-driver``, driven by selenium (no browser download at test
time; ``.ci/run`` installs the Debian packages where apt-get can). Without them the browser tests are skipped
and say why; the page's data and files are checked without a browser as well.
"""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy.special import softmax

from manifold_jax.cli import main
from manifold_jax.report import build_report, frame_indices, page_data, study_metrics, write_report_html
from manifold_jax.report.images import DIFFERENCE_LEVELS, png_bytes
from manifold_jax.study import MnistImage, StudySpec, atomic, load_model, load_study, run_study
from manifold_jax.view import view
from tests.models_helpers import save_random_bert, save_random_hf_vit

pytestmark = pytest.mark.xdist_group("report_html")  # one process builds the studies and starts the browser once

# JSON keeps probabilities at 6 significant digits: |stored - p| <= 0.5e-5 * 10^floor(log10 p) <= 5e-6 p
PROBABILITY_RTOL = 5e-6
MID = (DIFFERENCE_LEVELS - 1) // 2


# --------------------------------------------------------------------------- studies


@pytest.fixture(scope="module")
def image_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random HF ViT (28x28 grey, 49 patches of 4x4 in 16 dimensions: a full-rank patch embedding, so decoding is
    exact), two MNIST digits, SiMEC and SiMExp with their baselines, 11 saved points each."""
    root = tmp_path_factory.mktemp("html_vit")
    save_random_hf_vit(root / "model", image_size=28, patch_size=4, num_channels=1, hidden_size=16,
                       num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, num_labels=4)
    spec = StudySpec(model=str(root / "model"), inputs=(MnistImage(0), MnistImage(1000)), steps=20,
                     options={"save_every": 2, "chunk_size": 20, "eta": 5.0})
    out = run_study(spec, root / "study", progress=False, echo=lambda s: None)
    build_report(out, figures=False, echo=lambda s: None)
    return out


@pytest.fixture(scope="module")
def text_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random one-layer BERT classifier with MiniLM's tokenizer, two sentences, SiMExp (6 saved points) and the
    counterfactual (stopped at its flip), no baseline (the image study covers runs decoded by the page builder)."""
    root = tmp_path_factory.mktemp("html_text")
    save_random_bert(root / "model", "BertForSequenceClassification", hidden_size=16, num_hidden_layers=1,
                     num_attention_heads=2, intermediate_size=32)
    spec = StudySpec(model=str(root / "model"), inputs=("The striker scored twice.", "Parliament passed the bill."),
                     runs=("simexp", "counterfactual"), steps=10,
                     options={"save_every": 2, "chunk_size": 10, "eta": 50.0},
                     baseline=False)
    out = run_study(spec, root / "study", progress=False, echo=lambda s: None)
    build_report(out, figures=False, echo=lambda s: None)
    return out


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium through chromedriver, with the flags this closed network needs and a fresh profile."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[test]')")
    from selenium.webdriver.chrome.service import Service

    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver is None:
        pytest.skip("no Chromium here: install Debian's chromium and chromium-driver "
                    "(.ci/run does where apt-get works)")
    profile = tempfile.mkdtemp(prefix="manifold-jax-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={profile}", "--window-size=1400,1300"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    session = webdriver.Chrome(service=Service(driver), options=options)
    try:
        yield session
    finally:
        session.quit()
        shutil.rmtree(profile, ignore_errors=True)


# --------------------------------------------------------------------------- page helpers


def _open(browser: Any, study: Path) -> None:
    browser.get((study / "report.html").absolute().as_uri())
    browser.get_log("browser")  # start every page with an empty console record


def _console_problems(browser: Any) -> list[dict[str, Any]]:
    return [entry for entry in browser.get_log("browser") if entry["level"] in ("SEVERE", "WARNING")]


def _text(browser: Any, element_id: str) -> str:
    from selenium.webdriver.common.by import By

    return browser.find_element(By.ID, element_id).text


def _shown_probabilities(browser: Any) -> np.ndarray:
    from selenium.webdriver.common.by import By

    rows = browser.find_elements(By.CSS_SELECTOR, "#probabilities tbody tr")
    return np.array([float(r.get_attribute("data-p")) for r in rows])


def _png(browser: Any, element_id: str) -> np.ndarray:
    """The pixels of an <img> whose source is a PNG data URI, decoded by Pillow."""
    from PIL import Image
    from selenium.webdriver.common.by import By

    src = browser.find_element(By.ID, element_id).get_attribute("src")
    assert src.startswith("data:image/png;base64,"), src[:40]
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))))


def _levels(image: np.ndarray) -> np.ndarray:
    """uint8 levels of a [0, 1] grey image (H, W, 1): round(255 clip(v))."""
    return np.round(255 * np.clip(np.asarray(image, np.float64)[..., 0], 0, 1)).astype(np.uint8)


def _set_slider(browser: Any, index: int) -> None:
    browser.execute_script(
        "const s = document.getElementById('slider'); s.value = arguments[0]; s.dispatchEvent(new Event('input'));",
        index,
    )


def _select(browser: Any, element_id: str, value: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    Select(browser.find_element(By.ID, element_id)).select_by_value(value)


# --------------------------------------------------------------------------- without a browser


def test_the_page_is_one_self_contained_file(image_study: Path) -> None:
    page = (image_study / "report.html").read_text()
    # nothing to fetch: no external script, style, link or image; the SVG namespace is a name, not a request
    assert not re.search(r"<(link|iframe)\b|\bsrc=[\"']?(?!data:)[a-z]+:|@import|url\(", page), "external reference"
    assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", page)
    assert "<script src" not in page and "Content-Security-Policy" in page
    assert not [p for p in image_study.iterdir() if atomic.is_temporary(p)], "temporary file left behind"
    found = re.search(r'<script id="study-data" type="application/json">(.*?)</script>', page, re.DOTALL)
    data = json.loads(found.group(1))
    assert [r["name"] for r in data["runs"]] == ["simec", "simexp", "baseline_simec", "baseline_simexp"]
    assert data["inputs"][1]["name"] == "mnist:1000"


def test_frames_are_downsampled_evenly_with_both_ends(text_study: Path) -> None:
    np.testing.assert_array_equal(frame_indices(1001), np.arange(0, 1001, 10))  # 1000 points: every 10th
    shown = frame_indices(1001, 200)
    assert len(shown) == 200 and shown[0] == 0 and shown[-1] == 1000
    assert set(np.diff(shown)) <= {5, 6}  # 1000 / 199 = 5.03
    np.testing.assert_array_equal(frame_indices(11, 200), np.arange(11))
    with pytest.raises(ValueError, match="max_frames=1"):
        frame_indices(11, 1)
    study = load_study(text_study)
    data = page_data(study, study_metrics(study), load_model(study.spec), max_frames=4)
    assert data["runs"][0]["iterations"] == [0, 4, 6, 10] and data["runs"][0]["saved"] == 6  # points 0, 2, 3, 5
    assert len(data["inputs"][1]["runs"]["simexp"]["decoded"]) == 4
    np.testing.assert_allclose(data["inputs"][1]["runs"]["simexp"]["probabilities"][1],
                               softmax(study.trajectories["simexp"].y[1, 2].astype(np.float64)), rtol=PROBABILITY_RTOL)


def test_png_encoder_round_trips_through_pillow() -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    grey, rgb = rng.integers(0, 256, (5, 7), np.uint8), rng.integers(0, 256, (4, 3, 3), np.uint8)
    palette = rng.integers(0, 256, (9, 3), np.uint8)
    indices = rng.integers(0, 9, (6, 2), np.uint8)
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png_bytes(grey)))), grey)
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png_bytes(rgb)))), rgb)
    img = Image.open(io.BytesIO(png_bytes(indices, palette)))
    assert img.mode == "P"
    np.testing.assert_array_equal(np.asarray(img), indices)
    np.testing.assert_array_equal(np.asarray(img.convert("RGB")), palette[indices])
    with pytest.raises(ValueError, match=r"pixels must be"):
        png_bytes(np.zeros((2, 2, 2), np.uint8))


def test_view_opens_the_page_or_prints_its_path(text_study: Path, workdir: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    copy = workdir / "study"
    shutil.copytree(text_study, copy)
    (copy / "report.html").unlink()
    opened: list[str] = []
    page = view(copy, echo=lambda s: None, opener=lambda uri: opened.append(uri) or True)  # builds it first
    assert page.is_file() and opened == [page.as_uri()]
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr("sys.platform", "linux")
    main(["view", "study"])
    assert capsys.readouterr().out.strip() == f"no browser to open here; the report is {page}"
    with pytest.raises(SystemExit) as stop:
        main(["view", "nowhere"])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "is not a study directory" in err


def test_the_write_is_atomic(text_study: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure while writing leaves the previous page in place and no temporary file."""
    study = load_study(text_study)
    target = tmp_path / "report.html"
    target.write_text("previous")

    def fail(*_: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("os.fsync", fail)
    with pytest.raises(OSError, match="disk full"):
        write_report_html(study, study_metrics(study), target)
    assert target.read_text() == "previous" and [p.name for p in tmp_path.iterdir()] == ["report.html"]


# --------------------------------------------------------------------------- in the browser


def test_scrubbing_an_image_study_shows_the_stored_points(browser: Any, image_study: Path, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    study = load_study(image_study)
    raw = study.inputs["raw"]
    _open(browser, image_study)
    iterations = study.trajectories["simec"].iteration

    def check(run: str, b: int, s: int) -> None:
        traj = study.trajectories.get(run) or study.baselines[run.removeprefix("baseline_")]
        assert _text(browser, "iteration") == str(iterations[s]), (run, b, s)
        np.testing.assert_allclose(_shown_probabilities(browser), softmax(traj.y[b, s].astype(np.float64)),
                                   rtol=PROBABILITY_RTOL, atol=1e-12, err_msg=f"{run} input {b} point {s}")
        assert int(browser.find_element(By.ID, "probability-cursor").get_attribute("data-iteration")) == iterations[s]
        if run in study.interpretations:
            decoded = study.interpretations[run].inputs[b, s]
            np.testing.assert_array_equal(_png(browser, "decoded-image"), _levels(decoded))

    check("simec", 0, 0)
    np.testing.assert_array_equal(_png(browser, "original-image"), _levels(raw[0]))
    # the start decodes to the original (a full-rank patch embedding): a white difference image
    assert (_png(browser, "difference-image") == MID).all()
    slider = browser.find_element(By.ID, "slider")
    for _ in range(3):
        slider.send_keys(Keys.ARROW_RIGHT)  # the page handles the key once, the slider's own step is prevented
    check("simec", 0, 3)
    browser.find_element(By.ID, "slider").send_keys(Keys.ARROW_LEFT)
    check("simec", 0, 2)
    browser.find_element(By.ID, "slider").send_keys(Keys.END)
    check("simec", 0, len(iterations) - 1)
    _set_slider(browser, 7)
    check("simec", 0, 7)

    _select(browser, "run-select", "simexp")  # the same iteration in another run
    check("simexp", 0, 7)
    decoded = study.interpretations["simexp"].inputs[0, 7, ..., 0].astype(np.float64)
    difference = _png(browser, "difference-image").astype(int)
    changed = np.abs(decoded - raw[0, ..., 0]) > 0.05
    assert changed.any()
    assert (np.sign(difference - MID)[changed] == np.sign(decoded - raw[0, ..., 0])[changed]).all()

    _select(browser, "run-select", "baseline_simexp")  # decoded by the page builder: no saved interpretation
    check("baseline_simexp", 0, 7)
    baseline_image = _png(browser, "decoded-image")
    browser.find_element(By.ID, "slider").send_keys(Keys.HOME)
    check("baseline_simexp", 0, 0)
    assert np.abs(_png(browser, "decoded-image").astype(int) - _levels(raw[0])).max() <= 1
    assert np.abs(baseline_image.astype(int) - _levels(raw[0])).max() > 10

    _select(browser, "input-select", "1")
    check("baseline_simexp", 1, 0)
    np.testing.assert_array_equal(_png(browser, "original-image"), _levels(raw[1]))
    _set_slider(browser, 5)
    check("baseline_simexp", 1, 5)
    strip = browser.find_elements(By.CSS_SELECTOR, "#run-strip .run")
    assert [e.get_attribute("data-run") for e in strip] == ["simec", "simexp", "baseline_simec", "baseline_simexp"]
    strip[0].click()
    check("simec", 1, 5)

    browser.find_element(By.ID, "slider").send_keys(Keys.HOME)
    browser.find_element(By.ID, "play").click()
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, 20).until(lambda d: _text(d, "iteration") == str(iterations[-1]))
    assert "play" in _text(browser, "play")  # it stopped by itself at the end
    check("simec", 1, len(iterations) - 1)
    assert _console_problems(browser) == []
    _set_slider(browser, 6)
    shot = tmp_path / "report.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000


def test_scrubbing_a_text_study_marks_the_changed_words(browser: Any, text_study: Path, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    study = load_study(text_study)
    tokenizer = load_model(study.spec).tokenizer
    ctx = study.context
    traj, interp = study.trajectories["simexp"], study.interpretations["simexp"]
    _open(browser, text_study)
    for b in (0, 1):
        _select(browser, "input-select", str(b))
        keep = ctx["attention_mask"][b].astype(bool) & ~np.isin(ctx["input_ids"][b], tokenizer.all_special_ids)
        original = ctx["input_ids"][b][keep]
        marked_somewhere = False
        for s in range(len(traj.iteration)):
            _set_slider(browser, s)
            assert _text(browser, "iteration") == str(traj.iteration[s])
            np.testing.assert_allclose(_shown_probabilities(browser), softmax(traj.y[b, s].astype(np.float64)),
                                       rtol=PROBABILITY_RTOL, atol=1e-12)
            ids = interp.inputs[b, s][keep]
            changed = [t.removeprefix("##") for t, i, o in
                       zip(tokenizer.convert_ids_to_tokens(ids.tolist()), ids, original, strict=True) if i != o]
            marks = browser.find_elements(By.CSS_SELECTOR, "#decoded-text mark")
            assert [m.text for m in marks] == changed, (b, s)
            marked_somewhere |= bool(changed)
        assert marked_somewhere, "the study changed no word: the check above saw nothing to mark"
        _check_verified_sentences(browser, text_study, study, b)
    _check_named_statuses_and_thumbnails(browser, study)
    assert _console_problems(browser) == []
    shot = tmp_path / "report_text.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000


def _check_verified_sentences(browser: Any, text_study: Path, study: Any, b: int) -> None:
    """Beside the decoding, the verified sentences of projection.json: one row per searched point (and SiMExp's
    sentence in another class), the row of the current point highlighted, its changed words marked and its own
    top class and probability shown."""
    from selenium.webdriver.common.by import By

    traj = study.trajectories["simexp"]
    record = json.loads((text_study / "simexp" / "projection.json").read_text())["inputs"][b]
    labels = study.spec.labels
    marks_anywhere = False
    for point in record["points"]:
        _set_slider(browser, int(np.flatnonzero(traj.iteration == point["iteration"])[0]))
        rows = browser.find_elements(By.CSS_SELECTOR, "#verified tbody tr")
        assert len(rows) == len(record["points"]) + 1  # and the sentence in another class
        current = browser.find_elements(By.CSS_SELECTOR, "#verified tbody tr.current")
        assert [r.get_attribute("data-iteration") for r in current] == [str(point["iteration"])]
        shown = point["verified"] if point["verified"]["found"] else point["decoded"]
        marks = [m.text for m in current[0].find_elements(By.CSS_SELECTOR, "mark")]
        assert marks == [w for w, changed in shown["words"] if changed], (b, point["iteration"])
        top = int(np.argmax(shown["probs"]))
        says = current[0].find_element(By.CSS_SELECTOR, "td .prediction").text.split(" ")
        assert says[0] == labels[top] and float(says[1]) == pytest.approx(shown["probs"][top], rel=1e-3)
        marks_anywhere |= bool(browser.find_elements(By.CSS_SELECTOR, "#verified tbody mark"))
    away = browser.find_elements(By.CSS_SELECTOR, "#verified tbody tr")[-1]
    assert away.get_attribute("data-found") == ("1" if record["away"]["verified"]["found"] else "0")
    assert marks_anywhere, "no verified sentence changed a word"
    # the metrics tables hold names and numbers, no sentence
    for name in browser.find_elements(By.CSS_SELECTOR, "#metrics tbody th, #means tbody th"):
        assert "_" not in name.text, name.text
    for cell in browser.find_elements(By.CSS_SELECTOR, "#metrics td"):
        assert len(cell.text) <= 40, cell.text


def _check_named_statuses_and_thumbnails(browser: Any, study: Any) -> None:
    """The step status reads as names (the counterfactual's last point: "stopped"), and a run that ended
    earlier is shown, and labelled, at its own last point."""
    from selenium.webdriver.common.by import By

    from manifold_jax.report.labels import status_names

    _select(browser, "input-select", "0")
    _select(browser, "run-select", "counterfactual")
    cf = study.trajectories["counterfactual"]
    for s in (0, len(cf.iteration) - 1):
        _set_slider(browser, s)
        rows = {r.find_element(By.TAG_NAME, "th").text: r.find_element(By.TAG_NAME, "td").text
                for r in browser.find_elements(By.CSS_SELECTOR, "#records tbody tr")}
        assert rows["step status"] == status_names(int(cf.status[0, s]))
    assert rows["step status"] == "stopped"
    stopped = {r.find_element(By.TAG_NAME, "th").text: [c.text for c in r.find_elements(By.TAG_NAME, "td")]
               for r in browser.find_elements(By.CSS_SELECTOR, "#metrics tbody tr")}["stopped at iteration"]
    assert stopped == ["did not stop", str(int(cf.final.stop_iteration[0]))]  # SiMExp, the counterfactual
    _select(browser, "run-select", "simexp")
    _set_slider(browser, len(study.trajectories["simexp"].iteration) - 1)
    box = browser.find_element(By.CSS_SELECTOR, '#run-strip .run[data-run="counterfactual"]')
    end = int(cf.iteration[-1])
    assert int(box.get_attribute("data-iteration")) == end
    if end < study.spec.steps:  # a search that ended before the study's last step is labelled so
        assert f"ended at t = {end}:" in box.text

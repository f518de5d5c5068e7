"""The planner's HTML report opened in a real browser: headless Chromium (Debian's `chromium`
package, which `make test` installs) lays the page out, the test reads back what it drew, and a
screenshot is kept as a test artifact (test-artifacts/plan-report.png, or $CHIPFIT_TEST_ARTIFACTS)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from chipfit.cli import main
from chipfit.plan.html import CHARTS
from chipfit.report.plot import COLORS

ROOT = Path(__file__).resolve().parents[2]
# as root in a closed network: no sandbox, and none of Chromium's background connections
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]

# appended to a copy of the report: what the browser actually laid out, per chart
PROBE = """<script>
const out = {};
for (const fig of document.querySelectorAll('figure[data-chart]')) {
  const svg = fig.querySelector('svg');
  const box = svg ? svg.getBoundingClientRect() : {width: 0, height: 0};
  const drawn = (sel) => svg ? [...svg.querySelectorAll(sel)].filter(e => {
    const b = e.getBBox(); return b.width > 0 && b.height > 0; }).length : 0;
  const texts = svg ? [...svg.querySelectorAll('text')] : [];
  out[fig.dataset.chart] = {
    width: box.width, height: box.height,
    dots: drawn('circle[r="2.6"]'), bars: drawn('rect[fill="#1f77b4"]'), lines: drawn('polyline'),
    text_px: texts.reduce((s, t) => s + t.getComputedTextLength(), 0),
  };
}
const pre = document.createElement('pre');
pre.id = 'render-check';
pre.textContent = JSON.stringify(out);
document.body.appendChild(pre);
</script>"""


def _chromium() -> str:
    found = os.environ.get("CHIPFIT_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.fail("headless Chromium is needed: `make test` installs Debian's chromium package (apt-get)")
    return found


def _run(args: list[str], tmp: Path) -> str:
    cmd = [_chromium(), *FLAGS, f"--user-data-dir={tmp / 'profile'}", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_report_renders_every_plot_in_chromium(tmp_path: Path) -> None:
    from PIL import Image

    report = tmp_path / "report.html"
    argv = ["plan", "digits-cnn", "--devices", "a100-sxm,h100-sxm,t4,tpu-v5e,ascend-910b", "--precisions",
            "fp32,bf16,int8", "--batch-sizes", "1,32", "--chips", "1,2,4", "--eval-limit", "64",
            "--html", str(report), "--csv-only"]  # fmt: skip
    assert main(argv) == 0
    html = report.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)  # self-contained: works offline
    assert re.search(r"no on-demand price: ascend-910b", html)  # why devices are missing

    probe = tmp_path / "probe.html"
    probe.write_text(html.replace("</body>", PROBE + "</body>"))
    dom = _run(["--dump-dom", probe.as_uri()], tmp_path)
    found = re.search(r'<pre id="render-check">(.*?)</pre>', dom, re.S)
    assert found, "the probe script did not run"
    drawn = json.loads(found.group(1).replace("&quot;", '"'))
    assert list(drawn) == list(CHARTS)  # all five plots, in order
    for name, d in drawn.items():
        assert d["width"] >= 600 and d["height"] >= 100, (name, d)
        assert d["text_px"] > 200, (name, d)  # titles and axis labels laid out in a real font
    assert drawn["cost-latency"]["dots"] >= 20  # one per configuration that fits
    assert drawn["roofline"]["dots"] >= 5 and drawn["roofline"]["lines"] >= 1  # ops under the roofs
    assert drawn["layers"]["bars"] >= 3  # conv, conv, linear layers
    assert drawn["scaling"]["lines"] >= 2 and drawn["scaling"]["dots"] >= 6  # strategies over 1, 2, 4 chips
    acc_svg = re.search(r"<figure data-chart='accuracy'>(.*?)</figure>", html, re.S)
    assert acc_svg
    drops = [float(v) for v in re.findall(r'<rect x="\d+" y="[\d.]+" width="[\d.]+"[^>]*/><text[^>]*>([^<]+)</text>',
                                          acc_svg.group(1))]  # fmt: skip
    assert len(drops) == 3  # one bar per precision
    assert drawn["accuracy"]["bars"] == sum(d > 0 for d in drops)  # drawn wide exactly where accuracy is lost

    art = Path(os.environ.get("CHIPFIT_TEST_ARTIFACTS", ROOT / "test-artifacts"))
    art.mkdir(parents=True, exist_ok=True)
    shot = art / "plan-report.png"
    shot.unlink(missing_ok=True)
    _run([f"--screenshot={shot}", "--window-size=1000,2800", report.as_uri()], tmp_path)
    img = Image.open(shot).convert("RGB")
    assert img.size == (1000, 2800)
    colours = {c for _, c in img.getcolors(maxcolors=1 << 20) or []}
    palette = {tuple(int(h[i : i + 2], 16) for i in (1, 3, 5)) for h in COLORS}
    assert len(palette & colours) >= 4  # devices in distinct colours reached the pixels
    blank = sum(n for n, c in img.getcolors(maxcolors=1 << 20) or [] if c == (255, 255, 255))
    assert blank < 0.97 * img.size[0] * img.size[1]

"""Open an HTML file in headless Chromium with the network cut off and report what rendered.

Used by the report tests: a copy of the page gets a small script that, once the page has
loaded, records how many images decoded (``naturalWidth > 0``), how many tables exist and
every resource the page fetched; Chromium's ``--dump-dom`` then prints those records.
"""

import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

CHROMIUM = next(
    (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None
)

_PROBE = """<script>
window.addEventListener("load", () => {
  const images = [...document.images];
  const record = {
    images: images.length,
    decoded: images.filter((i) => i.complete && i.naturalWidth > 0).length,
    tables: document.querySelectorAll("table").length,
    rows: document.querySelectorAll("tbody tr").length,
    resources: performance.getEntriesByType("resource").map((e) => e.name),
    page_width: document.documentElement.scrollWidth,
    viewport_width: window.innerWidth,
    // Tables wider than their box scroll inside it instead of widening the page.
    scrolling_boxes: [...document.querySelectorAll(".scroll")].filter(
      (e) => e.scrollWidth > e.clientWidth).length,
    unboxed_wide_tables: [...document.querySelectorAll("table")].filter(
      (t) => t.getBoundingClientRect().right > window.innerWidth && !t.closest(".scroll")).length,
  };
  const out = document.createElement("pre");
  out.id = "probe";
  out.textContent = JSON.stringify(record);
  document.body.appendChild(out);
});
</script>"""

# Cut every route out: DNS resolves nothing and any proxy is a closed local port.
_OFFLINE = ["--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9"]
#: Browser window of the checks: a laptop screen's width.
WINDOW = (1280, 2000)
_HEADLESS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]


@dataclass(frozen=True)
class Rendered:
    images: int
    decoded: int
    tables: int
    rows: int
    resources: list[str]
    page_width: int
    viewport_width: int
    scrolling_boxes: int
    unboxed_wide_tables: int
    dom: str
    screenshot: Path


def render(page: Path, workdir: Path) -> Rendered:
    """Load ``page`` offline in headless Chromium; return what rendered and a screenshot."""
    probed = workdir / f"probed-{page.name}"
    probed.write_text(page.read_text().replace("</body>", _PROBE + "</body>"))
    url = probed.resolve().as_uri()
    common = [
        CHROMIUM,
        *_HEADLESS,
        *_OFFLINE,
        "--virtual-time-budget=10000",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
    ]
    dom = subprocess.run(
        [*common, "--dump-dom", url], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    screenshot = workdir / "screenshot.png"
    subprocess.run(
        [*common, f"--screenshot={screenshot}", url],
        capture_output=True,
        timeout=120,
        check=True,
    )
    match = re.search(r'<pre id="probe">(.*?)</pre>', dom, flags=re.DOTALL)
    if match is None:
        raise AssertionError(f"the page did not finish loading in Chromium:\n{dom[:2000]}")
    record = json.loads(match.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    return Rendered(**record, dom=dom, screenshot=screenshot)

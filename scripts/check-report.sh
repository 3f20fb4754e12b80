#!/usr/bin/env bash
# The browser check of report.html (issue 16): renders a report in headless Chromium (Debian's `chromium`, installed
# when missing) and fails unless the page is not blank, its scripts ran (every table made sortable), its plots are
# there (two inline SVG panels whose legends name every defense evaluated) with their axis titles, the galleries carry
# their labels, and the tables are there. Without an argument it makes the report from a small evaluation of its own
# (Fashion-MNIST, 60 test images, 3 defenses, white-box; ~1 minute on 2 cores, apart from building advkit); with a
# folder (e.g. advkit-report) it checks that folder's report.html. Screenshots (desktop and phone width) are left
# in the folder as check-desktop.png and check-phone.png.
#   bash scripts/check-report.sh [REPORT_DIR]      (ADVKIT=path/to/advkit: use that binary instead of building one)
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null; then
    echo "check-report: installing chromium" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
dir=${1:-}
defenses="none fgsm-at noise"
if [ -z "$dir" ]; then
    bin=${ADVKIT:-}  # an advkit binary to use; default: build it (release, in SCRATCH when set)
    if [ -z "$bin" ]; then
        bash scripts/setup.sh
        swift build -c release --product advkit ${SCRATCH:+--scratch-path "$SCRATCH"} >&2
        bin=$(swift build -c release ${SCRATCH:+--scratch-path "$SCRATCH"} --show-bin-path)/advkit
    fi
    dir=$(mktemp -d /tmp/advkit-check-report.XXXXXX)
    start=$(date +%s)
    "$bin" evaluate --dataset fashion-mnist --defenses "${defenses// /,}" --attacks fgsm,pgd,deepfool --query-attacks none \
        --threat white --limit 60 --train-limit 1000 --epochs 1 --pgd-steps 5 --eps 0,0.05,0.1,0.2 --quiet --out "$dir" >/dev/null
    echo "check-report: evaluation in $dir took $(( $(date +%s) - start )) s" >&2
else
    # The defenses the folder's results name.
    defenses=$(grep -o '"name" : "[^"]*"' "$dir/results.json" | sed 's/.*: "\(.*\)"/\1/' | awk '!seen[$0]++' | tr '\n' ' ')
fi
[ -f "$dir/report.html" ] || { echo "check-report: no $dir/report.html" >&2; exit 1; }
page="file://$(cd "$dir" && pwd)/report.html"
chrome() { chromium --headless=new --no-sandbox --disable-gpu --hide-scrollbars --mute-audio --no-first-run "$@" 2>/dev/null; }

dom=$(chrome --dump-dom "$page")
chrome --screenshot="$dir/check-desktop.png" --window-size=1280,2000 "$page" >/dev/null
chrome --screenshot="$dir/check-phone.png" --window-size=400,1600 "$page" >/dev/null

fail=0
need() {  # need DESCRIPTION MIN COUNT
    if [ "$3" -lt "$2" ]; then echo "check-report: FAIL $1 (found $3, need >= $2)" >&2; fail=1
    else echo "check-report: ok   $1 ($3)" >&2; fi
}
count() { { grep -o -- "$1" <<<"$dom" || true; } | wc -l; }
need "the page has its heading" 1 "$(count '<h1>AdvKit robustness report</h1>')"
need "the summary box" 1 "$(count '<section class="summary"')"
need "text in the page (characters outside tags)" 2000 "$(sed 's/<[^>]*>//g' <<<"$dom" | tr -d '[:space:]' | wc -c)"
tables=$(count '<table class="sortable"')
need "tables" 3 "$tables"
need "tables made sortable by the page's script (all $tables)" "$tables" "$(count 'data-sortable="ready"')"
need "curve panels (inline SVG)" 2 "$(count '<svg class="advkit-curves"')"
need "axis titles" 2 "$(count '>ε (L∞)</text>')"
need "y axis titles" 2 "$(count '>robust accuracy (%)</text>')"
for d in $defenses; do  # "name <tspan>(clean …)", or "name † <tspan>" for a curve that is not adaptive
    re=">$(sed 's/[][+.*^$()|?{}\\]/\\&/g' <<<"$d")( †)? <tspan"
    need "legend entries naming $d (one per panel)" 2 "$({ grep -oE -- "$re" <<<"$dom" || true; } | wc -l)"
done
need "galleries (inline SVG)" 1 "$(count '<svg class="advkit-gallery"')"
need "gallery labels (true class)" 6 "$(count 'class="truth"')"
need "pictures' pixels inline" 18 "$(count 'href="data:image/png;base64,')"
if grep -Eq '(src|href)="https?:' <<<"$dom"; then echo "check-report: FAIL the page fetches an external URL" >&2; fail=1; fi
# Not blank: each screenshot is several times the size of a blank page's at the same window size (a PNG of a white
# page compresses to a few kB; text, plots and pictures do not).
for size in 1280,2000:desktop 400,1600:phone; do
    shot="$dir/check-${size#*:}.png" blank=$(mktemp /tmp/advkit-blank.XXXXXX.png)
    chrome --screenshot="$blank" --window-size="${size%:*}" "about:blank" >/dev/null
    [ -s "$shot" ] || { echo "check-report: FAIL no screenshot $shot" >&2; fail=1; continue; }
    need "$(basename "$shot"): bytes, 5x a blank page's ($(stat -c %s "$blank"))" $(( 5 * $(stat -c %s "$blank") )) "$(stat -c %s "$shot")"
    rm -f "$blank"
done
[ "$fail" = 0 ] || { echo "check-report: $page FAILED" >&2; exit 1; }
echo "check-report: $page passed" >&2

#!/usr/bin/env bash
# docs/app.png, the README's picture of the demo page: serves `python -m lvm.app` on a demo run, waits until
# the page answers, and has headless Chromium draw it (its examples show; nothing is generated).
#   docs/screenshot_app.sh                               # the newest finished run under logs/demo/runs
#   docs/screenshot_app.sh logs/demo/runs/<time> [out.png]
# Needs Debian's chromium (apt-get install -y chromium). PORT (7861) and APP_ARGS (more Hydra overrides of
# conf/app.yaml, e.g. "device=cuda") may be set. Run from the repository root, after `python -m lvm.demo`.
set -euo pipefail
run=${1:-latest}
out=${2:-docs/app.png}
port=${PORT:-7861}
log=$(mktemp)
# shellcheck disable=SC2086  # APP_ARGS is a list of overrides
python -m lvm.app demo_run="$run" server_port="$port" ${APP_ARGS:-} >"$log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true; rm -f "$log"' EXIT
until curl -sf "http://127.0.0.1:$port/" >/dev/null; do
  kill -0 "$server" 2>/dev/null || { cat "$log" >&2; echo "error: the page did not start" >&2; exit 1; }
  sleep 1
done
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1280,1400 \
  --virtual-time-budget=10000 --screenshot="$out" "http://127.0.0.1:$port/" 2>/dev/null
echo "wrote $out"

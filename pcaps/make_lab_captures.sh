#!/usr/bin/env bash
# Re-make the lab captures of pcaps/lab/ and the lab call of pcaps/demo/ with real softphones.
#
#   sudo bash pcaps/make_lab_captures.sh            # all three calls (about 1.5 minutes)
#   LAB_DIR=/path/to/shared/lab sudo -E bash pcaps/make_lab_captures.sh
#
# Uses ../shared/lab/call.sh (two baresip user agents in network namespaces, a SPAN mirror,
# espeak-ng speech; see ../shared/lab/README.md): needs root and the lab's Debian packages
# (bash ../shared/lab/install.sh). The lab's output goes to a temporary directory; what the tests
# use is copied here:
#   lab/NAME.pcap              the mirror-port capture
#   lab/NAME.json              the call's metadata (Call-ID, parties, ports, talk time, RTP streams)
#   lab/NAME/A_sent.wav        what the caller fed its encoder  (ground truth, left channel)
#   lab/NAME/B_sent.wav        what the callee fed its encoder  (ground truth, right channel)
#   demo/01-lab-call-pcma-8s.pcap
# Then every capture is checked with the lab's verify.py (tshark: SIP flow, RTP both ways, audio).
#
# Real calls are not byte-reproducible (Call-IDs, SSRCs, ports and timings change on every run);
# the tests take everything they compare from NAME.json, so re-made captures pass the same tests.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
LAB_DIR=${LAB_DIR:-$(cd "$HERE/../.." && pwd)/shared/lab}
CALL_SECONDS=12
DEMO_SECONDS=8

die() { echo "make_lab_captures.sh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root (the lab builds network namespaces)"
[ -x "$LAB_DIR/call.sh" ] || [ -f "$LAB_DIR/call.sh" ] || die "no lab at $LAB_DIR (set LAB_DIR)"
for tool in baresip tcpdump tshark espeak-ng sox; do
    command -v "$tool" >/dev/null || die "$tool is missing: bash $LAB_DIR/install.sh"
done

WORK=$(mktemp -d /tmp/callrec-lab.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

call() {  # CODEC SECONDS NAME
    echo "== $3: $1 call, $2 s"
    LAB_OUT="$WORK" bash "$LAB_DIR/call.sh" "$1" "$2" "$3"
    python3 "$LAB_DIR/verify.py" "$WORK/$3.pcap"
}

keep_lab() {  # NAME
    mkdir -p "$HERE/lab/$1"
    install -m 0644 "$WORK/$1.pcap" "$WORK/$1.json" "$HERE/lab/"
    install -m 0644 "$WORK/$1/A_sent.wav" "$WORK/$1/B_sent.wav" "$HERE/lab/$1/"
}

call PCMU "$CALL_SECONDS" lab_pcmu_12s
keep_lab lab_pcmu_12s
call PCMA "$CALL_SECONDS" lab_pcma_12s
keep_lab lab_pcma_12s
call PCMA "$DEMO_SECONDS" demo_pcma_8s
mkdir -p "$HERE/demo"
install -m 0644 "$WORK/demo_pcma_8s.pcap" "$HERE/demo/01-lab-call-pcma-8s.pcap"

echo "== done:"
ls -l "$HERE/lab" "$HERE/lab"/*/ "$HERE/demo/01-lab-call-pcma-8s.pcap"

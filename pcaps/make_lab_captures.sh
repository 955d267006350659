#!/usr/bin/env bash
# Re-make the lab captures of pcaps/lab/ and the lab call of pcaps/demo/ with real softphones.
#
#   sudo bash pcaps/make_lab_captures.sh              # everything (about 4.5 minutes)
#   sudo bash pcaps/make_lab_captures.sh g711         # only the G.711 calls + the demo call (1.5 min)
#   sudo bash pcaps/make_lab_captures.sh codecs       # only the codec set of lab/codecs/ (3 min)
#   sudo bash pcaps/make_lab_captures.sh scenarios    # only the hard scenarios of lab/scenarios/ (3 min)
#   sudo bash pcaps/make_lab_captures.sh modes        # only the recording-mode calls of lab/modes/ (2 min)
#   LAB_DIR=/path/to/shared/lab sudo -E bash pcaps/make_lab_captures.sh
#   KEEP_WORK=1 sudo -E bash pcaps/make_lab_captures.sh codecs   # keep the lab's full output
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
#   lab/codecs/NAME.pcap, NAME.json, NAME/A_sent.wav, NAME/B_sent.wav, and SHA256SUMS of them all
#                              the same for the other codecs baresip offers (G.722, Opus, GSM,
#                              G.726-32, AMR, AMR-WB, L16), Opus with 5 % loss, PCMU with DTMF
#                              (tests/test_lab_codecs.py; a folder of their own, because
#                              tests/test_lab_calls.py and test_tshark_crosscheck.py take every
#                              lab/*.json and hold it to G.711 thresholds)
#   lab/scenarios/NAME.pcap, NAME.json, NAME/A_sent.wav, NAME/B_sent.wav, and SHA256SUMS of them all
#                              the lab's hard scenarios, short: hold, SIP over TCP, VLAN-tagged
#                              mirror, fragmented INVITE, impaired uplink (call.sh), early media,
#                              SSRC change, codec change (sipp-call.sh; there X_sent.wav is the
#                              decoded payload of the RTP X played). Not part of the default run.
#   lab/modes/NAME.pcap, NAME.json, NAME/A_sent.wav, NAME/B_sent.wav, announcement.wav, SHA256SUMS
#                              calls for the recording modes (tests/test_recording_modes_lab.py):
#                              on-demand start/stop and pause/resume by RFC 4733 codes, and consent
#                              calls whose callee side speaks the announcement first (espeak-ng).
#                              Not part of the default run.
# Then every capture is checked with the lab's verify.py (tshark: SIP flow, RTP both ways, audio,
# and the scenario checks: the impairer's drops, the DTMF digits, hold re-INVITEs, TCP, VLAN tags,
# fragments, early media, SSRC / codec switches on the wire).
#
# Real calls are not byte-reproducible (Call-IDs, SSRCs, ports and timings change on every run);
# the tests take everything they compare from NAME.json, so re-made captures pass the same tests.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
LAB_DIR=${LAB_DIR:-$(cd "$HERE/../.." && pwd)/shared/lab}
CALL_SECONDS=12
DEMO_SECONDS=8

die() { echo "make_lab_captures.sh: $*" >&2; exit 1; }
SETS=("$@")
[ ${#SETS[@]} -gt 0 ] || SETS=(g711 codecs)
for s in "${SETS[@]}"; do
    case "$s" in g711|codecs|scenarios|modes) ;; *) die "unknown set '$s' (g711, codecs, scenarios, modes)" ;; esac
done
want() { local s; for s in "${SETS[@]}"; do [ "$s" = "$1" ] && return 0; done; return 1; }
[ "$(id -u)" = 0 ] || die "run as root (the lab builds network namespaces)"
[ -x "$LAB_DIR/call.sh" ] || [ -f "$LAB_DIR/call.sh" ] || die "no lab at $LAB_DIR (set LAB_DIR)"
tools=(baresip tcpdump tshark espeak-ng sox)
if want scenarios; then tools+=(sipp); fi
for tool in "${tools[@]}"; do
    command -v "$tool" >/dev/null || die "$tool is missing: bash $LAB_DIR/install.sh"
done
# the namespaces have fixed names: one lab call per machine at a time
if ip netns list 2>/dev/null | awk '{print $1}' | grep -qxE 'uaA|uaB|sw|tap'; then
    die "a lab is already up (ip netns list): another lab run in progress? (its netns-down.sh removes it)"
fi

WORK=$(mktemp -d /tmp/callrec-lab.XXXXXX)
if [ "${KEEP_WORK:-0}" = 1 ]; then
    trap 'echo "the lab output (received WAVs, logs, impairer ground truth) is kept in $WORK"' EXIT
else
    trap 'rm -rf "$WORK"' EXIT
fi

call() {  # CODEC SECONDS NAME [VAR=value ...]  (call.sh's scenario options, e.g. IMPAIR=loss=5%)
    local codec=$1 seconds=$2 name=$3
    shift 3
    echo "== $name: $codec call, $seconds s${*:+ ($*)}"
    env LAB_OUT="$WORK" "$@" bash "$LAB_DIR/call.sh" "$codec" "$seconds" "$name"
    python3 "$LAB_DIR/verify.py" "$WORK/$name.pcap"
}

sipp_call() {  # MODE SECONDS NAME [VAR=value ...]  (sipp-call.sh's options, e.g. EARLY_S=4)
    local mode=$1 seconds=$2 name=$3
    shift 3
    echo "== $name: SIPp $mode call, $seconds s${*:+ ($*)}"
    env LAB_OUT="$WORK" "$@" bash "$LAB_DIR/sipp-call.sh" "$mode" "$seconds" "$name"
    python3 "$LAB_DIR/verify.py" "$WORK/$name.pcap"
}

keep_lab() {  # NAME [SUBDIR of lab/]
    local dest=$HERE/lab${2:+/$2}
    mkdir -p "$dest/$1"
    install -m 0644 "$WORK/$1.pcap" "$WORK/$1.json" "$dest/"
    install -m 0644 "$WORK/$1/A_sent.wav" "$WORK/$1/B_sent.wav" "$dest/$1/"
}

if want g711; then
    call PCMU "$CALL_SECONDS" lab_pcmu_12s
    keep_lab lab_pcmu_12s
    call PCMA "$CALL_SECONDS" lab_pcma_12s
    keep_lab lab_pcma_12s
    call PCMA "$DEMO_SECONDS" demo_pcma_8s
    mkdir -p "$HERE/demo"
    install -m 0644 "$WORK/demo_pcma_8s.pcap" "$HERE/demo/01-lab-call-pcma-8s.pcap"
fi

if want codecs; then
    # one call per codec, as negotiated: G722/8000 (16 kHz audio), opus/48000/2 (mono, 32 kbit/s),
    # GSM/8000, G726-32/8000, AMR/8000, AMR-WB/16000, L16/16000
    for codec in G722 opus GSM G726-32 AMR AMR-WB L16; do
        name="lab_$(echo "$codec" | tr 'A-Z-' 'a-z_')_${CALL_SECONDS}s"
        call "$codec" "$CALL_SECONDS" "$name"
        keep_lab "$name" codecs
    done
    # Opus with 5 % loss on the caller's uplink (A->B only: every frame A sends, SIP included, is
    # dropped with probability 0.05 by impair.py, seed 1; NAME.json lists the dropped sequence numbers)
    call opus "$CALL_SECONDS" lab_opus_loss5_12s IMPAIR=loss=5% IMPAIR_SEED=1
    keep_lab lab_opus_loss5_12s codecs
    # PCMU with RFC 4733 digits during speech: the caller sends 1234 at +3 s and *# at +7 s,
    # the callee 9 at +9 s (baresip "sndcode")
    call PCMU "$CALL_SECONDS" lab_dtmf_pcmu_12s DTMF=3:1234,7:*# "ACTIONS=9=B:sndcode 9"
    keep_lab lab_dtmf_pcmu_12s codecs
    (cd "$HERE/lab/codecs" && sha256sum -- *.pcap *.json */*.wav >SHA256SUMS)
fi

if want scenarios; then
    # short versions of the lab's hard scenarios (../shared/lab/README.md, "Hard scenarios");
    # times are seconds after call establishment (call.sh) or after the ACK (sipp-call.sh)
    # alice holds at +5 s (re-INVITE a=sendonly), resumes at +12 s (re-INVITE a=sendrecv)
    call PCMU 18 sc_hold_pcmu_18s HOLD=5-12
    # every SIP message on one TCP connection (sip:bob@...;transport=tcp)
    call PCMA 12 sc_tcp_pcma_12s TRANSPORT=tcp
    # the mirror copy (only it) leaves the SPAN port 802.1Q-tagged, VLAN 100
    call PCMU 12 sc_vlan_pcmu_12s VLAN=100
    # path MTU 576 on both UAs: INVITE and 200 OK leave as IPv4 fragments
    call PCMU 12 sc_frag_pcmu_12s MTU=576
    # alice's uplink (A->B, SIP included): loss 3 %, reorder 10 %, delay 40 ms +- 20 ms, seed 1
    call PCMU 15 sc_impair_pcmu_15s "IMPAIR=loss=3% reorder=10% delay=40ms jitter=20ms" IMPAIR_SEED=1
    # SIPp: 183 with SDP and B->A RTP at once, 200 OK 4 s later, A->B RTP after the ACK
    sipp_call early 12 sc_early_pcmu_12s CODEC=PCMU EARLY_S=4
    # SIPp: at +6 s both directions go on with a new SSRC and new seq / timestamp bases, no SIP
    sipp_call ssrcchange 12 sc_ssrcchange_pcmu_12s CODEC=PCMU SWITCH_AT=6
    # SIPp: at +6 s alice re-INVITEs with PCMA only; both directions switch PT 0 -> 8, same SSRC
    sipp_call codecchange 12 sc_codecchange_12s CODEC=PCMU CODEC2=PCMA SWITCH_AT=6
    for name in sc_hold_pcmu_18s sc_tcp_pcma_12s sc_vlan_pcmu_12s sc_frag_pcmu_12s \
        sc_impair_pcmu_15s sc_early_pcmu_12s sc_ssrcchange_pcmu_12s sc_codecchange_12s; do
        keep_lab "$name" scenarios
    done
    (cd "$HERE/lab/scenarios" && sha256sum -- *.pcap *.json */*.wav >SHA256SUMS)
fi

if want modes; then
    # On-demand: the caller keys *1 (start) at +2 s, *2 (stop) at +5 s, *1 at +9 s, *2 at +12 s.
    call PCMU 15 md_ondemand_pcmu_15s "DTMF=2:*1,5:*2,9:*1,12:*2"
    # Pause: *3 at +3 s, a card number keyed during the pause at +5 s, *4 (resume) at +9 s.
    call PCMU 13 md_pause_pcmu_13s "DTMF=3:*3,5:4111,9:*4"
    # Consent: the callee's side begins with the lab's first sentence for phone B; the same sentence,
    # spoken by espeak-ng with the same voice at 16 kHz, is the announcement the recorder looks for.
    call PCMU 10 md_consent_pcmu_10s
    call opus 10 md_consent_opus_10s
    # ... the caller keys the opt-out digit 9 at +1 s, during the announcement
    call PCMA 8 md_consent_optout_pcma_8s "DTMF=1:9"
    # ... the caller hangs up 3 s after the answer, during the (4.2 s) announcement
    call PCMU 3 md_consent_hangup_pcmu_3s
    for name in md_ondemand_pcmu_15s md_pause_pcmu_13s md_consent_pcmu_10s md_consent_opus_10s \
        md_consent_optout_pcma_8s md_consent_hangup_pcmu_3s; do
        keep_lab "$name" modes
    done
    espeak-ng -v en-us+f3 -s 150 -w "$WORK/announcement_raw.wav" \
        "Hi, this is phone B, the callee, answering the call."
    sox -V1 "$WORK/announcement_raw.wav" -r 16000 -c 1 -b 16 -e signed-integer "$HERE/lab/modes/announcement.wav"
    (cd "$HERE/lab/modes" && sha256sum -- *.pcap *.json *.wav */*.wav >SHA256SUMS)
fi

echo "== done:"
if want g711; then ls -l "$HERE/lab"/*.pcap "$HERE/lab"/*.json "$HERE/lab"/lab_*/ "$HERE/demo/01-lab-call-pcma-8s.pcap"; fi
if want codecs; then ls -l "$HERE/lab/codecs" "$HERE/lab/codecs"/*/; fi
if want scenarios; then ls -l "$HERE/lab/scenarios" "$HERE/lab/scenarios"/*/; fi
if want modes; then ls -l "$HERE/lab/modes" "$HERE/lab/modes"/*/; fi

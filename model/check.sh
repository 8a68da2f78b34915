#!/usr/bin/env bash
# Model-checks model/blocklock.pml and model/version.pml with spin (see docs/MODEL.md). One line per check, then "N passed, M failed".
# Exits non-zero if any check has an unexpected outcome: a must-pass check with a violation or an incomplete
# search, a mutant / expected counterexample that spin does NOT find, or spin/gcc/pan not running at all.
#   pass : spin must explore the whole state space and find no violation.
#   fail : spin must find a violation whose message matches the given pattern (mutants of the model, and the
#          documented F3 counterexample). A fail check run with pan -c0 searches all errors; one must match.
# JOBS=n runs n checks at a time (default 2); the lines are printed in the fixed order below.
set -u
here="$(cd "$(dirname "$0")" && pwd)"

if ! command -v spin >/dev/null 2>&1; then
    echo "spin not found: installing with apt-get" >&2
    if [ "$(id -u)" -eq 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
        echo "spin is missing and we are not root: install the 'spin' package" >&2; exit 2; fi
    $SUDO apt-get update >/dev/null && $SUDO apt-get install -y spin >/dev/null \
        || { echo "cannot install spin" >&2; exit 2; }
fi
command -v gcc >/dev/null 2>&1 || { echo "gcc is required" >&2; exit 2; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp -r "$here"/blocklock.pml "$here"/version.pml "$here"/mutants "$work"/
JOBS=${JOBS:-2}

SAFE="-DSAFETY -DNOCLAIM -DCOLLAPSE"     # assertions + invalid end states
LIVE="-DNFAIR=3 -DCOLLAPSE"              # ltl live, weak fairness (pan -a -f)
# Must-fail checks whose counterexample lies within ~300 K states: gcc -O0 (0.8 s of CPU instead of 3.5 s for -O2;
# the search itself is too short for the optimisation to pay back)
SAFE0="$SAFE -O0"
LIVE0="$LIVE -O0"
DEPTH="-m200000"

# run_check IDX NAME EXPECT MODEL "SPIN -D FLAGS" "CC FLAGS" "PAN FLAGS" [PATTERN]  -> $work/res.IDX
run_check() {
    local idx=$1 name=$2 expect=$3 model=$4 dflags=$5 cflags=$6 pflags=$7 pattern=${8:-.}
    local dir="$work/run.$idx"
    mkdir -p "$dir/mutants"
    cp "$work/blocklock.pml" "$work/version.pml" "$dir"/; cp "$work"/mutants/*.pml "$dir/mutants/"
    local t0 t1 rc
    t0=$(date +%s.%N)
    ( cd "$dir" && spin -a $dflags "$model" >spin.out 2>&1 && gcc -O2 $cflags -o pan pan.c >cc.out 2>&1 \
        && ./pan $pflags >pan.out 2>&1 )
    rc=$?
    t1=$(date +%s.%N)
    local out="$dir/pan.out" states errors what secs verdict
    states=$(grep -m1 -oE '^ *[0-9.e+]+ states, stored' "$out" 2>/dev/null | awk '{print $1}')
    errors=$(grep -m1 -oE 'errors: [0-9]+' "$out" 2>/dev/null | awk '{print $2}')
    # the first violation; with pan -c0 (all errors) the first one that matches the pattern, if any does
    what=$( { grep -E '^pan:[0-9]+: |acceptance cycle' "$out" 2>/dev/null | grep -m1 -E -- "$pattern"; \
              grep -m1 -E '^pan:[0-9]+: |acceptance cycle' "$out" 2>/dev/null; } | head -1 | sed 's/^pan:[0-9]*: //' | cut -c1-80)
    secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
    if [ -z "$errors" ]; then
        verdict="FAIL (spin/gcc/pan did not complete: rc=$rc: $(cat "$dir"/spin.out "$dir"/cc.out "$out" 2>/dev/null | grep -v '^ltl' | head -2 | tr '\n' ' '))"
    elif [ "$expect" = pass ]; then
        if [ "$errors" != 0 ]; then
            verdict="FAIL (violation: $what)"
        elif grep -qE 'Search not completed|max search depth too small|error: max search depth|out of memory' "$out"; then
            verdict="FAIL (incomplete search)"
        else
            verdict="PASS"
        fi
    else
        if [ "$errors" = 0 ]; then
            verdict="FAIL (no violation found)"
        elif ! printf '%s\n' "$what" | grep -qE -- "$pattern"; then
            verdict="FAIL (unexpected violation: $what)"
        else
            verdict="PASS (violation found as expected: $what)"
        fi
    fi
    printf '%-32s %-4s states=%-9s %6ss  %s\n' "$name" "$expect" "${states:-?}" "$secs" "$verdict" >"$work/res.$idx"
}

n=0
declare -a HEADS
check() {
    n=$((n + 1))
    while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n; done
    run_check "$n" "$@" &
}
section() { HEADS[$((n + 1))]="$1"; }

M=blocklock.pml
MUTEX='nw==0|nr==0'
START=$(date +%s)

section "== Must pass: the C# protocol as it is (commit 02aea4c), lock layout 3 (slot 0 on line 0, slots 1-2 on line 1; configs 1-3 and 10 without crash; 4-6, 11 and 12 with one crash of any slot at any step) =="
check safety-c1-nocrash            pass $M "-DCFG=1 -DMAXCRASH=0"     "$SAFE" "$DEPTH"
check safety-c2-nocrash            pass $M "-DCFG=2 -DMAXCRASH=0"     "$SAFE" "$DEPTH"
check safety-c3-nocrash-F1         pass $M "-DCFG=3 -DMAXCRASH=0"     "$SAFE" "$DEPTH"
check safety-c6-crash              pass $M "-DCFG=6"                  "$SAFE" "$DEPTH"
check safety-c4-crash-giveup-slice pass $M "-DCFG=4 -DSLICE -DGIVEUP" "$SAFE" "$DEPTH"
check safety-c5-crash-giveup-slice pass $M "-DCFG=5 -DSLICE -DGIVEUP" "$SAFE" "$DEPTH"
check live-c1-nocrash              pass $M "-DCFG=1 -DMAXCRASH=0"     "$LIVE" "$DEPTH -a -f"
check live-c3-nocrash              pass $M "-DCFG=3 -DMAXCRASH=0"     "$LIVE" "$DEPTH -a -f"
check live-c6-crash                pass $M "-DCFG=6"                  "$LIVE" "$DEPTH -a -f"
check live-c4-crash                pass $M "-DCFG=4"                  "$LIVE" "$DEPTH -a -f"
check safety-c11-crash-oneline     pass $M "-DCFG=11"                 "$SAFE" "$DEPTH"
check live-c11-crash-oneline       pass $M "-DCFG=11"                 "$LIVE" "$DEPTH -a -f"
check safety-c10-giveup-waitann-F4 pass $M "-DCFG=10 -DMAXCRASH=0 -DGIVEUP -DCHECK_WAITANN" "$SAFE" "$DEPTH"
check safety-c12-crash-waitann-F4b pass $M "-DCFG=12 -DCHECK_WAITANN" "$SAFE" "$DEPTH"
section "== Must pass: F2b fixed (ScrubSlot always wakes): no slice, a crash at any step, even inside WakeAll =="
check fix-F2b-safety-c4-crash      pass $M "-DCFG=4"                  "$SAFE" "$DEPTH"
check fix-F2b-safety-c5-crash      pass $M "-DCFG=5"                  "$SAFE" "$DEPTH"
check fix-F2b-live-c5-crash        pass $M "-DCFG=5"                  "$LIVE" "$DEPTH -a -f"
section "== Must fail: the previous ScrubSlot (wake only if released or sleepers bit set): finding F2b =="
check F2b-crash-inside-wakeall     fail $M "-DCFG=5 -DSCRUB_WAKE_IF_SLEEPERS" "$SAFE0" "$DEPTH" 'invalid end state'
section "== Must fail: F3, the stronger writer priority that the protocol does not give (documented) =="
check F3-strict-writer-priority    fail $M "-DCFG=1 -DMAXCRASH=0 -DPRIO_STRICT" "$SAFE0" "$DEPTH" 'pwo\[t\]'
section "== Must fail: the RefreshWaiting before 02aea4c (one pass: And, look, Or back): F4 (a stale Waiting bit; with a give-up, and with a crash) and F4b (a crash between its And and its Or loses a waiting line-mate's bit: WAITANN, all errors searched) =="
check mutant-F4-single-pass-c10    fail mutants/f4_refresh_single_pass.pml "-DCFG=10 -DMAXCRASH=0 -DGIVEUP" "$SAFE0" "$DEPTH" 'W==0'
check mutant-F4-single-pass-c12-crash fail mutants/f4_refresh_single_pass.pml "-DCFG=12" "$SAFE" "$DEPTH" 'W==0'
check mutant-F4b-single-pass-c12-crash fail mutants/f4_refresh_single_pass.pml "-DCFG=12 -DCHECK_WAITANN -DNO_END_W" "$SAFE" "$DEPTH -c0" 'wa\[0\]'
section "== Must fail: mutants of the model (the old F1/F2 code, and protocol lines removed) =="
check mutant-f1-no-reentrant-recheck fail mutants/f1_no_reentrant_recheck.pml "-DCFG=3 -DMAXCRASH=0" "$SAFE0" "$DEPTH" "$MUTEX"
check mutant-f1-no-writer-recheck  fail mutants/f1_no_writer_recheck.pml "-DCFG=3 -DMAXCRASH=0" "$SAFE0" "$DEPTH" "$MUTEX"
check mutant-f2-scrub-no-wake      fail mutants/f2_scrub_no_wake.pml "-DCFG=4 -DWAKE_ATOMIC"   "$SAFE0" "$DEPTH" 'invalid end state'
check mutant-no-recheck            fail mutants/no_recheck.pml       "-DCFG=1 -DMAXCRASH=0"    "$SAFE0" "$DEPTH" 'assert'
check mutant-no-sleep-fence        fail mutants/no_sleep_fence.pml   "-DCFG=1 -DMAXCRASH=0"    "$SAFE0" "$DEPTH" 'invalid end state'
check mutant-no-scrub-wait         fail mutants/no_scrub_wait.pml    "-DCFG=5 -DSLICE"         "$SAFE0" "$DEPTH" 'assert'
section "== Must fail: mutants of the layout-3 protocol (ReaderLines announcement, Waiting line bits) =="
check mutant-no-announce           fail mutants/no_announce.pml      "-DCFG=4 -DMAXCRASH=0"    "$SAFE0" "$DEPTH" "$MUTEX"
check mutant-announce-after-cas    fail mutants/announce_after_cas.pml "-DCFG=3 -DMAXCRASH=0"  "$SAFE" "$DEPTH" "$MUTEX"
check mutant-scrub-refresh-if-flag fail mutants/scrub_refresh_if_flag.pml "-DCFG=5"           "$SAFE0" "$DEPTH" 'assert'
check mutant-no-relook             fail mutants/no_relook.pml        "-DCFG=10 -DMAXCRASH=0 -DCHECK_WAITANN" "$SAFE0" "$DEPTH" 'wa\[0\]'
section "== Must pass: forgery and repair (-DFORGE): a member forges slot 2's words while it is free; the broker's repair, a join of slot 2 (c7), the broker slot's applier (c8) and write-back (c9, F5 fixed) =="
F="-DFORGE -DMAXCRASH=0"
check forge-safety-c7-join         pass $M "$F -DCFG=7"                 "$SAFE" "$DEPTH"
check forge-safety-c8-applier      pass $M "$F -DCFG=8"                 "$SAFE" "$DEPTH"
check forge-safety-c9-writeback-F5 pass $M "$F -DCFG=9"                 "$SAFE" "$DEPTH"
check forge-live-c7-join           pass $M "$F -DCFG=7 -DNFORGE=1"      "$LIVE" "$DEPTH -a -f"
check forge-live-c8-applier        pass $M "$F -DCFG=8 -DNFORGE=1"      "$LIVE" "$DEPTH -a -f"
check forge-live-c9-writeback      pass $M "$F -DCFG=9 -DNFORGE=1"      "$LIVE" "$DEPTH -a -f"
section "== Must fail: the announcement before 02aea4c (only before a first hold): F5 (a forged count in the broker slot's byte: the write-back's read skips AnnounceLine and a member writer does not look at its line) =="
check mutant-F5-announce-first-hold fail mutants/f5_announce_first_hold.pml "$F -DCFG=9"   "$SAFE0" "$DEPTH" "$MUTEX"
section "== Must fail: mutants of the repair (no state lock around the judgement, the broker slot judged without its ledger, the broker's claim outside the ledger's gate, a join that keeps a free slot's forged words) =="
check mutant-repair-no-gate        fail mutants/repair_no_gate.pml        "$F -DCFG=7" "$SAFE" "$DEPTH" 'R\[s\]>0|nw==0|nr==0'
check mutant-repair-ignores-ledger-c8 fail mutants/repair_ignores_ledger.pml "$F -DCFG=8" "$SAFE0" "$DEPTH" "$MUTEX"
check mutant-repair-ignores-ledger-c9 fail mutants/repair_ignores_ledger.pml "$F -DCFG=9" "$SAFE0" "$DEPTH" 'R\[s\]>0|nw==0|nr==0'
check mutant-claim-outside-gate    fail mutants/claim_outside_gate.pml    "$F -DCFG=8" "$SAFE0" "$DEPTH" "$MUTEX"
check mutant-join-no-scrub         fail mutants/join_no_scrub.pml         "$F -DCFG=7 -DNFORGE=1" "$LIVE0" "$DEPTH -a -f" 'acceptance cycle'
V=version.pml
LOST='excused'
section "== Must pass: object versions (ObjectVersion; 2 writers, a waiter of 2 rounds, a reader), without and with one crash of any writer or the waiter at any step =="
check version-nocrash              pass $V "-DMAXCRASH=0"              "$SAFE" "$DEPTH"
check version-crash                pass $V "-DMAXCRASH=1"              "$SAFE" "$DEPTH"
section "== Must fail: V1, a writer killed between its And and its FUTEX_WAKE: the next writer does not wake (the sleep slice does; documented) =="
check V1-next-writer-wakes         fail $V "-DMAXCRASH=1 -DNEXT_WRITER_WAKES" "$SAFE" "$DEPTH" "$LOST"
section "== Must fail: mutants of the version protocol (a protocol step removed or reordered) =="
check mutant-version-no-wake       fail $V "-DMUT_NO_WAKE"             "$SAFE" "$DEPTH" "$LOST"
check mutant-version-no-cas        fail $V "-DMUT_NO_CAS"              "$SAFE" "$DEPTH" "$LOST"
check mutant-version-wake-before-clear fail $V "-DMUT_WAKE_BEFORE_CLEAR" "$SAFE" "$DEPTH" "$LOST"
check mutant-version-add-before-copy fail $V "-DMUT_ADD_BEFORE_COPY"   "$SAFE" "$DEPTH" 'copied>=v'
check mutant-version-no-pending    fail $V "-DMUT_NO_PENDING"          "$SAFE" "$DEPTH" 'b==255'
wait

passed=0 failed=0
for i in $(seq 1 "$n"); do
    [ -n "${HEADS[$i]:-}" ] && echo "${HEADS[$i]}"
    if [ -f "$work/res.$i" ]; then line=$(cat "$work/res.$i"); else line="check $i: FAIL (no result)"; fi
    echo "$line"
    case $line in *" PASS"*) passed=$((passed + 1));; *) failed=$((failed + 1));; esac
done
echo "total wall time $(( $(date +%s) - START ))s with JOBS=$JOBS ($(spin -V 2>/dev/null | head -1))"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]

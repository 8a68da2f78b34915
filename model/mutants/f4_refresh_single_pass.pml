/* Mutant: blocklock.pml with REFRESH_SINGLE_PASS -- RefreshWaiting as before commit 02aea4c (one pass: And, look
   again, Or back; the repair refreshes only lines whose bit was set): findings F4 (a stale Waiting bit) and F4b (a
   bit lost by a refresher killed between its And and its Or). check.sh requires spin to FIND a violation. */
#define REFRESH_SINGLE_PASS
#include "../blocklock.pml"

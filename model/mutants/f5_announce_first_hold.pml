/* Mutant: blocklock.pml with ANNOUNCE_FIRST_ONLY -- a reader announces its line only before a first hold (count 0),
   as before commit 02aea4c: finding F5 (a forged broker-slot count on an unannounced line). check.sh requires spin to
   FIND a violation. */
#define ANNOUNCE_FIRST_ONLY
#include "../blocklock.pml"

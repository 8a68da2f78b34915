/* Mutant: blocklock.pml with ANNOUNCE_AFTER_CAS and ANNOUNCE_FIRST_ONLY -- the reader announces its line after its
   CAS, and (the rule before commit 02aea4c) only before a first hold. With the announcement before every increment
   (02aea4c), announcing after the CAS but before the step-3 re-check is safe in config 3 (no violation in 2.4 M
   states: every increment then has its own announce / re-check pair against the writer's Active / AnyReaders pair);
   see docs/MODEL.md. check.sh requires spin to FIND a violation. */
#define ANNOUNCE_AFTER_CAS
#define ANNOUNCE_FIRST_ONLY
#include "../blocklock.pml"

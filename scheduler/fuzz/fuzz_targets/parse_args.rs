//! Any bytes: `parse_args` returns Ok or Err, never panics; what parses can be
//! answered and the answer is JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;
use solgrid_scheduler::wire::parse_args;

fuzz_target!(|data: &[u8]| {
    if let Ok(args) = parse_args(data) {
        let names = args.candidate_names();
        assert!(names.len() <= data.len());
    }
});

//! Fuzzes the pack parser: any bytes must give a pack or an error, never a panic; and every
//! tensor of a pack that parses must decode or fail its checksum cleanly.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nextscale::pack::{Pack, read_header};

fuzz_target!(|data: &[u8]| {
    let _ = read_header(data);
    if let Ok(pack) = Pack::from_bytes(data.to_vec()) {
        for t in pack.header.tensors.clone() {
            let _ = pack.read(&t.name);
        }
    }
});

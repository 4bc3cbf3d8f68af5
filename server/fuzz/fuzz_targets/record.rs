//! Stored records: decoding arbitrary bytes (a damaged store) gives a
//! record or an error, never a panic; a decoded record encodes back to
//! bytes that decode to the same record.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcsd::store::codec;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = codec::decode_allocation(data) {
        assert_eq!(
            codec::decode_allocation(&codec::encode_allocation(&r)).unwrap(),
            r
        );
    }
    if let Ok(g) = codec::decode_group(data) {
        assert_eq!(codec::decode_group(&codec::encode_group(&g)).unwrap(), g);
    }
    if let Ok(h) = codec::decode_holder(data) {
        assert_eq!(codec::decode_holder(&codec::encode_holder(&h)).unwrap(), h);
    }
    if let Ok(r) = codec::decode_reservation(data) {
        assert_eq!(
            codec::decode_reservation(&codec::encode_reservation(&r)).unwrap(),
            r
        );
    }
    let _ = codec::decode_pair_key(data);
});

//! The replicated topic catalog as a peer sends it: decoding, and merging what decodes (the
//! merge must be idempotent and commutative, whatever the input).
#![no_main]

use causeway_replication::topic_catalog::TopicCatalog;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (left, right) = data.split_at(data.len() / 2);
    let (Ok(a), Ok(b)) = (TopicCatalog::decode(left), TopicCatalog::decode(right)) else {
        let _ = TopicCatalog::decode(data);
        return;
    };
    let mut ab = a.clone();
    ab.merge(&b);
    let mut ba = b.clone();
    ba.merge(&a);
    assert_eq!(ab.encode(), ba.encode(), "merge is not commutative");
    let mut again = ab.clone();
    again.merge(&b);
    assert_eq!(again.encode(), ab.encode(), "merge is not idempotent");
});

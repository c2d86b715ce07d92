use meridian_store::{ObjectKey, Txn, TxnOp};

use super::{take_within, Pending};

fn write(bytes: usize) -> Pending {
    let txn = Txn {
        request_id: String::new(),
        ops: vec![TxnOp::Put {
            key: ObjectKey::new("k", "n"),
            value: vec![0; bytes],
            expected_revision: None,
        }],
    };
    Pending::new(txn).0
}

#[test]
fn a_round_takes_writes_up_to_the_byte_budget_and_at_least_one() {
    let mut carry: Vec<Pending> = [400, 400, 400, 10].into_iter().map(write).collect();
    let round = take_within(&mut carry, 1000);
    assert_eq!((round.len(), carry.len()), (2, 2));
    // A write larger than the whole budget still goes, alone.
    let mut carry: Vec<Pending> = [5000, 10].into_iter().map(write).collect();
    assert_eq!(take_within(&mut carry, 1000).len(), 1);
    assert_eq!(carry.len(), 1);
    assert_eq!(take_within(&mut Vec::new(), 1000).len(), 0);
}

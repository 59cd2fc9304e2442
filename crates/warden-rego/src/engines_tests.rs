#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use super::*;

fn proto(id: u64) -> Arc<Prototype> {
    let mut engine = Engine::new();
    engine
        .add_policy("t.rego".into(), format!("package t\nv := {id}\n"))
        .unwrap();
    Arc::new(Prototype { id, engine })
}

fn eval(p: &Arc<Prototype>) -> String {
    with_engine(p, |e| e.eval_rule("data.t.v".into()).unwrap().to_string())
}

#[test]
fn cache_is_bounded_lru_and_drops_dead_policies() {
    std::thread::spawn(|| {
        let protos: Vec<_> = (1_000..1_006).map(proto).collect();
        for p in &protos {
            assert_eq!(eval(p), p.id.to_string());
        }
        assert_eq!(cached_engines(), ENGINES_PER_THREAD);
        // The most recent ones are hits and still answer with their own snapshot.
        assert_eq!(eval(&protos[5]), "1005");
        assert_eq!(eval(&protos[0]), "1000");
        // Dropped policies are purged at the next miss.
        drop(protos);
        let fresh = proto(2_000);
        assert_eq!(eval(&fresh), "2000");
        assert_eq!(cached_engines(), 1);
    })
    .join()
    .unwrap();
}

#[test]
fn reentrant_use_gets_a_fresh_engine() {
    let p = proto(3_000);
    let inner = with_engine(&p, |outer| {
        let nested = eval(&p);
        format!("{}/{nested}", outer.eval_rule("data.t.v".into()).unwrap())
    });
    assert_eq!(inner, "3000/3000");
}

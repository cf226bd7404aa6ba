//! The reference model classifying frames with random sources against policies of 1, 1k and
//! 100k IPv4 prefixes (`Throughput::Elements`: frames per second).

use benches::{allow_policy, random_frames, v4_prefixes, SIZES};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use filter_user::model::Model;

const BATCH: usize = 1024;

fn bench_model(c: &mut Criterion) {
    let mut g = c.benchmark_group("model");
    g.throughput(Throughput::Elements(BATCH as u64));
    for n in SIZES {
        let list = v4_prefixes(n, 11);
        let model = Model::new(&allow_policy(&list, &[]));
        let frames = random_frames(&list, BATCH, 12);
        g.bench_with_input(
            BenchmarkId::new("random_sources", n),
            &frames,
            |b, frames| b.iter(|| frames.iter().filter(|f| model.judge(f).pass).count()),
        );
    }
    g.finish();
}

criterion_group!(benches, bench_model);
criterion_main!(benches);

//! Allocation into a schedule holding 2048 live reservations (groups 0–2047 all
//! reserved over the same hour), so automatic allocation must pass every one of
//! them to find group 2048; plus an explicit-group admit and an admit that fits
//! into a gap.
//!
//! `cargo bench --bench schedule`

use criterion::{Criterion, criterion_group, criterion_main};
use rtp_relay::group::{GroupId, Layout};
use rtp_relay::reservation::Reservation;
use rtp_relay::reservation::schedule::{self, Limits, Schedule, Timing};
use std::hint::black_box;
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

const T0: OffsetDateTime = datetime!(2026-11-24 10:00 UTC);

fn reservation(id: String, start: OffsetDateTime) -> Reservation {
    Reservation {
        event_id: id,
        group: None,
        layout: Layout::AudioDisplayVideo,
        start,
        end: start + Duration::hours(1),
        source: Some("192.0.2.10".parse().unwrap()),
        source_policy: None,
        destination: None,
        media: Default::default(),
    }
}

fn full_schedule(live: u16) -> Schedule {
    let mut s = Schedule::new(
        Timing {
            lead: Duration::minutes(30),
            trail: Duration::minutes(15),
        },
        Limits {
            last_group: GroupId::try_from(8063).unwrap(),
            max_concurrent: 8064,
            retry: Duration::seconds(2),
        },
    );
    for g in 0..live {
        let group = GroupId::try_from(u32::from(g)).unwrap();
        s.insert(reservation(format!("live-{g}"), T0), group);
        // A later event on every group too, as a semester's schedule has.
        s.insert(
            reservation(format!("later-{g}"), T0 + Duration::days(1)),
            group,
        );
    }
    s
}

fn bench(c: &mut Criterion) {
    let now = T0 - Duration::hours(2);
    let s = full_schedule(2048);
    let overlapping = reservation("new".into(), T0 + Duration::minutes(10));
    let in_a_gap = reservation("gap".into(), T0 + Duration::hours(5));
    assert_eq!(s.admit(&overlapping, None, None, now).unwrap().get(), 2048);
    assert_eq!(s.admit(&in_a_gap, None, None, now).unwrap().get(), 0);

    let empty = full_schedule(0);
    let mut g = c.benchmark_group("admit_into_2048_live");
    g.bench_function("baseline_allocate_into_empty_schedule", |b| {
        b.iter(|| empty.admit(black_box(&overlapping), None, None, now))
    });
    g.bench_function("allocate_past_2048_busy_groups", |b| {
        b.iter(|| s.admit(black_box(&overlapping), None, None, now))
    });
    g.bench_function("allocate_into_a_free_window", |b| {
        b.iter(|| s.admit(black_box(&in_a_gap), None, None, now))
    });
    let explicit = Some(GroupId::try_from(1500).unwrap());
    g.bench_function("explicit_group_conflict_check", |b| {
        b.iter(|| s.admit(black_box(&overlapping), explicit, None, now))
    });
    g.finish();

    // Between changes a poll before the next wake-up returns at once; the
    // pass that works the wake-up out runs once a change.
    c.bench_function("poll_2048_live_nothing_due", |b| {
        let mut s = full_schedule(2048);
        b.iter(|| s.poll(black_box(now)))
    });
    c.bench_function("next_wakeup_2048_live_after_a_change", |b| {
        let s = full_schedule(2048);
        b.iter(|| schedule::next_wakeup(black_box(s.entries())))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);

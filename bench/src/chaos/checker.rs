//! The chaos run's checker (issue 20): what every customer received against the truth, in
//! the manner of Jepsen's checkers. It knows nothing of sockets or processes: it is handed
//! the acknowledged publishes, what the store holds at the end, each customer's history and
//! the fault windows, and it says what was lost, duplicated, out of order or late.
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;

/// Seconds since the run began.
pub type At = f64;

/// A publish the server acknowledged (`200` with the event).
#[derive(Clone, Debug)]
pub struct Ack {
    pub order: String,
    pub status: usize,
    pub id: i64,
    pub acked_at: At,
}

/// An event the store holds at the end.
#[derive(Clone, Debug)]
pub struct Stored {
    pub id: i64,
    pub order: String,
    pub status: usize,
}

/// One event as a customer's EventSource dispatched it.
#[derive(Clone, Debug)]
pub struct Received {
    pub id: i64,
    pub at: At,
    /// When the connection it came on was opened: an event acknowledged before it, on a
    /// connection after the first, came by catch-up (the replay after a resume), not live.
    pub connection_opened_at: At,
    /// Which of the customer's connections it came on (1 for the first).
    pub connection: usize,
}

/// What a customer watches.
#[derive(Clone, Debug)]
pub enum Watch {
    /// `/stream?order=…` or `/orders/{id}/stream`.
    Orders(Vec<String>),
    /// `/stream`: every order.
    All,
}

/// One customer's whole history.
#[derive(Clone, Debug)]
pub struct History {
    pub name: String,
    pub watch: Watch,
    /// Its first resume point (`None`: from the start).
    pub first_resume: Option<i64>,
    pub started_at: At,
    pub received: Vec<Received>,
}

/// A fault, from when it was done to when it was undone (equal for an instant one).
#[derive(Clone, Debug)]
pub struct Fault {
    pub kind: &'static str,
    pub what: String,
    pub start: At,
    pub end: At,
}

/// What order a customer's events must come in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ordering {
    /// Ids strictly increasing on every stream (ours, spec §3 and §11).
    Global,
    /// Each order's events in the order they were published, whatever the interleaving of
    /// orders (what Nchan promises for a stream of several channels).
    PerOrder,
}

/// An event must reach a customer within this long after the end of the fault windows
/// that delayed it (spec §10).
pub const WITHIN: f64 = 5.0;

/// What one kind of fault did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KindRow {
    pub count: usize,
    /// The longest a delivery overlapping such a fault took, in seconds.
    pub longest_delay: f64,
    /// Deliveries overlapping such a fault that came by catch-up.
    pub recovered: usize,
}

/// What the checker found.
#[derive(Debug, Default)]
pub struct Report {
    pub events: usize,
    pub faults: usize,
    pub lost: usize,
    pub duplicated: usize,
    pub out_of_order: usize,
    /// Deliveries later than [`WITHIN`] after the faults that delayed them.
    pub late: usize,
    /// Per fault kind, and `none` for deliveries that overlapped no fault.
    pub by_kind: BTreeMap<&'static str, KindRow>,
    /// Each delivery: when its event was acknowledged (or the customer arrived), and how
    /// long it took.
    pub delays: Vec<(At, f64)>,
    /// A line per finding, for the reader (at most a few per kind).
    pub findings: Vec<String>,
}

impl Report {
    /// The closing line, exactly as the issue gives it.
    pub fn line(&self) -> String {
        format!(
            "chaos: {} events, {} faults, {} lost, {} duplicated, {} out of order",
            self.events, self.faults, self.lost, self.duplicated, self.out_of_order
        )
    }

    pub fn passed(&self) -> bool {
        self.lost == 0 && self.duplicated == 0 && self.out_of_order == 0
    }

    pub fn table(&self) -> String {
        let mut out = String::from(
            "| fault | count | longest delivery (s) | events recovered by catch-up |\n| --- | ---: | ---: | ---: |\n",
        );
        for (kind, row) in &self.by_kind {
            let _ = writeln!(
                out,
                "| {kind} | {} | {:.2} | {} |",
                row.count, row.longest_delay, row.recovered
            );
        }
        let _ = writeln!(
            out,
            "\n{} deliveries later than {WITHIN} s after the faults that delayed them.",
            self.late
        );
        out
    }

    fn finding(&mut self, text: String) {
        if self.findings.len() < 50 {
            self.findings.push(text);
        }
    }
}

/// Checks everything against the store's truth:
/// - every acknowledged publish is stored, once, with the id it was acknowledged with;
/// - every customer received exactly the store's events of what it watches after its first
///   resume point: none missing (lost), none twice (duplicated), ids strictly increasing
///   (else out of order);
/// - every delivery came within [`WITHIN`] of the end of the faults overlapping its wait.
pub fn check(
    acks: &[Ack],
    stored: &[Stored],
    customers: &[History],
    faults: &[Fault],
    ordering: Ordering,
) -> Report {
    let mut report = Report {
        events: stored.len(),
        faults: faults.len(),
        ..Report::default()
    };
    for fault in faults {
        report.by_kind.entry(fault.kind).or_default().count += 1;
    }
    report.by_kind.entry("none").or_default();

    // The store: each (order, status) once; each acknowledged publish in it with its id.
    let mut by_key: HashMap<(&str, usize), Vec<i64>> = HashMap::new();
    for event in stored {
        by_key
            .entry((event.order.as_str(), event.status))
            .or_default()
            .push(event.id);
    }
    for ((order, status), ids) in &by_key {
        if ids.len() > 1 {
            report.duplicated += ids.len() - 1;
            report.finding(format!(
                "the store holds {order} status {status} {} times",
                ids.len()
            ));
        }
    }
    let mut acked_at: HashMap<i64, At> = HashMap::new();
    for ack in acks {
        match by_key.get(&(ack.order.as_str(), ack.status)) {
            Some(ids) if ids.contains(&ack.id) => {
                let at = acked_at.entry(ack.id).or_insert(ack.acked_at);
                *at = at.min(ack.acked_at);
            }
            _ => {
                report.lost += 1;
                report.finding(format!(
                    "acknowledged {} status {} as id {} is not stored",
                    ack.order, ack.status, ack.id
                ));
            }
        }
    }

    let mut events_of: HashMap<&str, Vec<i64>> = HashMap::new();
    for event in stored {
        events_of
            .entry(event.order.as_str())
            .or_default()
            .push(event.id);
    }
    let order_of: HashMap<i64, &str> = stored.iter().map(|e| (e.id, e.order.as_str())).collect();
    let mut all: Vec<i64> = stored.iter().map(|e| e.id).collect();
    all.sort_unstable();

    for customer in customers {
        let mut expected: Vec<i64> = match &customer.watch {
            Watch::All => all.clone(),
            Watch::Orders(orders) => orders
                .iter()
                .flat_map(|o| events_of.get(o.as_str()).cloned().unwrap_or_default())
                .collect(),
        };
        expected.retain(|id| customer.first_resume.is_none_or(|from| *id > from));
        expected.sort_unstable();
        let expected_set: HashSet<i64> = expected.iter().copied().collect();

        let mut seen = HashSet::new();
        let mut highest: HashMap<&str, i64> = HashMap::new();
        for received in &customer.received {
            if !seen.insert(received.id) {
                report.duplicated += 1;
                report.finding(format!(
                    "{} received id {} twice",
                    customer.name, received.id
                ));
                continue;
            }
            let scope = match ordering {
                Ordering::Global => "",
                Ordering::PerOrder => order_of.get(&received.id).copied().unwrap_or(""),
            };
            let highest = highest.entry(scope).or_insert(i64::MIN);
            if received.id < *highest {
                report.out_of_order += 1;
                report.finding(format!(
                    "{} received id {} after id {highest}",
                    customer.name, received.id
                ));
            }
            *highest = (*highest).max(received.id);
            if !expected_set.contains(&received.id) {
                // Not one of its orders' stored events: as wrong as a duplicate.
                report.duplicated += 1;
                report.finding(format!(
                    "{} received id {}, which is not an event it watches",
                    customer.name, received.id
                ));
                continue;
            }
            delivery(
                &mut report,
                customer,
                received,
                acked_at.get(&received.id),
                faults,
            );
        }
        for id in &expected {
            if !seen.contains(id) {
                report.lost += 1;
                let acked = acked_at
                    .get(id)
                    .map_or("never acknowledged".to_owned(), |at| {
                        format!("acknowledged at {at:.2} s")
                    });
                report.finding(format!(
                    "{} (there from {:.2} s) never received id {id}, {acked}",
                    customer.name, customer.started_at
                ));
            }
        }
    }
    report
}

/// Times one delivery against the faults it overlapped.
fn delivery(
    report: &mut Report,
    customer: &History,
    received: &Received,
    acked_at: Option<&At>,
    faults: &[Fault],
) {
    // From when the customer could have had it: its acknowledgement, or the customer's
    // arrival for an event older than it.
    let from = acked_at
        .copied()
        .unwrap_or(received.at)
        .max(customer.started_at);
    let delay = (received.at - from).max(0.0);
    let catch_up =
        received.connection > 1 && acked_at.is_some_and(|at| *at < received.connection_opened_at);
    report.delays.push((from, delay));
    let overlapping: Vec<&Fault> = faults
        .iter()
        .filter(|f| f.start <= received.at && f.end >= from)
        .collect();
    let deadline = overlapping.iter().map(|f| f.end).fold(from, f64::max) + WITHIN;
    if received.at > deadline {
        report.late += 1;
        report.finding(format!(
            "{} received id {} {:.2} s after it was acknowledged, past {:.2} s",
            customer.name,
            received.id,
            delay,
            deadline - from
        ));
    }
    let kinds: Vec<&'static str> = if overlapping.is_empty() {
        vec!["none"]
    } else {
        overlapping.iter().map(|f| f.kind).collect()
    };
    for kind in kinds {
        let row = report.by_kind.entry(kind).or_default();
        row.longest_delay = row.longest_delay.max(delay);
        row.recovered += usize::from(catch_up);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(n: i64) -> Vec<Stored> {
        (1..=n)
            .map(|id| Stored {
                id,
                order: "o".into(),
                status: (id - 1) as usize,
            })
            .collect()
    }

    fn acks(n: i64) -> Vec<Ack> {
        (1..=n)
            .map(|id| Ack {
                order: "o".into(),
                status: (id - 1) as usize,
                id,
                acked_at: id as f64,
            })
            .collect()
    }

    fn customer(ids: &[i64]) -> History {
        History {
            name: "c".into(),
            watch: Watch::Orders(vec!["o".into()]),
            first_resume: None,
            started_at: 0.0,
            received: ids
                .iter()
                .map(|&id| Received {
                    id,
                    at: id as f64 + 0.01,
                    connection_opened_at: 0.0,
                    connection: 1,
                })
                .collect(),
        }
    }

    #[test]
    fn a_complete_history_passes() {
        let report = check(
            &acks(6),
            &stored(6),
            &[customer(&[1, 2, 3, 4, 5, 6])],
            &[],
            Ordering::Global,
        );
        assert!(report.passed(), "{report:?}");
        assert_eq!(report.late, 0);
        assert_eq!(
            report.line(),
            "chaos: 6 events, 0 faults, 0 lost, 0 duplicated, 0 out of order"
        );
    }

    #[test]
    fn it_reports_a_lost_a_duplicated_and_a_reordered_event() {
        // 3 never came, 5 came twice, 2 came after 4.
        let report = check(
            &acks(6),
            &stored(6),
            &[customer(&[1, 4, 2, 5, 5, 6])],
            &[],
            Ordering::Global,
        );
        assert_eq!(
            (report.lost, report.duplicated, report.out_of_order),
            (1, 1, 1),
            "{report:?}"
        );
        assert!(!report.passed());
        assert_eq!(
            report.line(),
            "chaos: 6 events, 0 faults, 1 lost, 1 duplicated, 1 out of order"
        );
    }

    #[test]
    fn per_order_ordering_allows_orders_to_interleave_but_not_to_go_back() {
        // Order "o" holds 1..=3, order "p" 4..=6.
        let mut truth = stored(3);
        truth.extend((4..=6).map(|id| Stored {
            id,
            order: "p".into(),
            status: (id - 4) as usize,
        }));
        let mut both = customer(&[4, 1, 5, 2, 6, 3]);
        both.watch = Watch::Orders(vec!["o".into(), "p".into()]);
        assert_eq!(
            check(&[], &truth, &[both.clone()], &[], Ordering::Global).out_of_order,
            3
        );
        assert!(check(&[], &truth, &[both], &[], Ordering::PerOrder).passed());
        let mut back = customer(&[4, 2, 1, 5, 3, 6]);
        back.watch = Watch::Orders(vec!["o".into(), "p".into()]);
        assert_eq!(
            check(&[], &truth, &[back], &[], Ordering::PerOrder).out_of_order,
            1
        );
    }

    #[test]
    fn an_acknowledged_publish_missing_from_the_store_is_lost() {
        let mut truth = stored(6);
        truth.remove(3);
        let report = check(&acks(6), &truth, &[], &[], Ordering::Global);
        assert_eq!(report.lost, 1);
    }

    #[test]
    fn a_resume_point_and_other_orders_bound_what_is_expected() {
        let mut truth = stored(4);
        truth.push(Stored {
            id: 5,
            order: "other".into(),
            status: 0,
        });
        let mut resumed = customer(&[3, 4]);
        resumed.first_resume = Some(2);
        assert!(check(&[], &truth, &[resumed], &[], Ordering::Global).passed());
        // An event of another order is not one to receive.
        let wrong = customer(&[1, 2, 3, 4, 5]);
        assert_eq!(
            check(&[], &truth, &[wrong], &[], Ordering::Global).duplicated,
            1
        );
        // The all-orders stream expects every one.
        let mut all = customer(&[1, 2, 3, 4]);
        all.watch = Watch::All;
        assert_eq!(check(&[], &truth, &[all], &[], Ordering::Global).lost, 1);
    }

    #[test]
    fn a_delivery_is_late_only_past_five_seconds_after_its_faults() {
        let truth = stored(2);
        let acks = acks(2);
        let fault = Fault {
            kind: "kill",
            what: "a".into(),
            start: 1.5,
            end: 4.0,
        };
        let mut slow = customer(&[1, 2]);
        // Id 2 acknowledged at 2.0, during the fault; received 8.5 s later: 4.0 + 5 = 9.0.
        slow.received[1].at = 8.5;
        slow.received[1].connection_opened_at = 7.0;
        slow.received[1].connection = 2;
        let report = check(
            &acks,
            &truth,
            &[slow.clone()],
            std::slice::from_ref(&fault),
            Ordering::Global,
        );
        assert_eq!(report.late, 0);
        let row = &report.by_kind["kill"];
        assert_eq!((row.count, row.recovered), (1, 1));
        assert!((row.longest_delay - 6.5).abs() < 1e-9);
        slow.received[1].at = 9.5;
        assert_eq!(
            check(&acks, &truth, &[slow], &[fault], Ordering::Global).late,
            1
        );
    }
}

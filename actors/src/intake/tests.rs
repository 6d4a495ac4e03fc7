//! The intake over an in-memory sink: every way a body can go.

use std::collections::HashMap;
use std::sync::Mutex;

use super::*;
use crate::domain::InputFormat;

/// What the in-memory queue does with a line, by its bytes.
type QueueBehaviour = fn(&[u8]) -> Delivery;

/// A key's record: the body hash, the recorded answer, when it was claimed.
type KeyRecord = (Vec<u8>, Option<(u16, Vec<u8>)>, DateTime<Utc>);

#[derive(Default)]
struct Stored {
    /// key → (hash, recorded answer, claimed at).
    keys: HashMap<String, KeyRecord>,
    dead_letters: Vec<(String, String)>,
    queued: Vec<(Vec<u8>, Option<String>)>,
    sessions_ended: u32,
}

struct MemorySink {
    stored: Mutex<Stored>,
    queue: QueueBehaviour,
    dead_letters_fail: bool,
}

#[derive(Default)]
struct Session {
    letters: Vec<(String, String)>,
    sealed: bool,
}

impl MemorySink {
    fn new(queue: QueueBehaviour) -> MemorySink {
        MemorySink { stored: Mutex::default(), queue, dead_letters_fail: false }
    }

    fn stored(&self) -> std::sync::MutexGuard<'_, Stored> {
        self.stored.lock().unwrap()
    }
}

#[async_trait::async_trait]
impl IntakeSink for MemorySink {
    type Held = Session;

    async fn claim(&self, _: &mut Session, key: &str, hash: &[u8]) -> Result<Claim, SinkError> {
        let mut stored = self.stored();
        match stored.keys.get(key) {
            None => {
                stored.keys.insert(key.to_owned(), (hash.to_vec(), None, Utc::now()));
                Ok(Claim::Claimed)
            }
            Some((other, _, _)) if other != hash => Ok(Claim::OtherBody),
            Some((_, Some((status, body)), _)) => Ok(Claim::Answered { status: *status, body: body.clone() }),
            Some((_, None, since)) => Ok(Claim::Running { since: *since }),
        }
    }

    async fn store_dead_letters(&self, held: &mut Session, letters: &[DeadLetter<'_>]) -> Result<(), SinkError> {
        if self.dead_letters_fail {
            return Err(SinkError("the store is down".into()));
        }
        held.letters.extend(letters.iter().map(|l| (l.reason.to_owned(), l.detail.clone())));
        Ok(())
    }

    async fn seal_dead_letters(&self, held: &mut Session) -> Result<(), SinkError> {
        held.sealed = true;
        Ok(())
    }

    async fn queue(
        &self,
        service: Option<&str>,
        lines: &[Line<'_>],
        _: DateTime<Utc>,
        _: Duration,
        report: &mut (dyn FnMut(u32, Delivery) -> bool + Send),
    ) {
        let mut sending = true;
        for line in lines {
            let delivery = if sending { (self.queue)(line.bytes) } else { Delivery::Skipped };
            if delivery == Delivery::Queued {
                self.stored().queued.push((line.bytes.to_vec(), service.map(str::to_owned)));
            }
            sending &= report(line.number, delivery);
        }
    }

    async fn commit(&self, held: Session, answer: Option<(&str, u16, &[u8])>) -> Result<(), SinkError> {
        assert!(held.letters.is_empty() || held.sealed, "dead letters committed before they were sealed");
        let mut stored = self.stored();
        stored.dead_letters.extend(held.letters);
        if let Some((key, status, body)) = answer {
            stored.keys.get_mut(key).expect("a claimed key").1 = Some((status, body.to_vec()));
        }
        stored.sessions_ended += 1;
        Ok(())
    }

    async fn discard(&self, _: Session, key: Option<&str>) -> Result<(), SinkError> {
        let mut stored = self.stored();
        if let Some(key) = key {
            stored.keys.retain(|k, (_, answer, _)| k != key || answer.is_some());
        }
        stored.sessions_ended += 1;
        Ok(())
    }
}

fn all_queued(_: &[u8]) -> Delivery {
    Delivery::Queued
}

fn intake(queue: QueueBehaviour) -> Intake<MemorySink> {
    let rules = ParseRules { input_format: InputFormat::Json, ..ParseRules::default() };
    Intake::new(MemorySink::new(queue), rules, Duration::from_millis(1_500))
}

fn options(idempotency: Option<(&'static str, &'static [u8])>) -> IntakeOptions<'static> {
    IntakeOptions { service: Some("checkout"), idempotency, dry_run: false, received: Utc::now(), source: "http" }
}

fn log() -> Logger {
    Logger::root(slog::Discard, slog::o!())
}

const BODY: &[u8] = b"{\"message\":\"one\"}\n\n{not json\n{\"message\":\"three\"}\n";

async fn take(intake: &Intake<MemorySink>, body: &[u8], options: IntakeOptions<'_>) -> IntakeOutcome {
    intake.take(Lines::Body(body), options, &log()).await.expect("an outcome")
}

fn accepted(outcome: IntakeOutcome) -> Value {
    match outcome {
        IntakeOutcome::Accepted { body } => serde_json::from_slice(&body).unwrap(),
        other => panic!("expected Accepted, got {other:?}"),
    }
}

#[test]
fn lines_are_numbered_as_sent_and_blank_ones_skipped() {
    let lines = lines_of(b"a\n \n\nb\r\n");
    let numbers: Vec<(u32, &[u8])> = lines.iter().map(|l| (l.number, l.bytes)).collect();
    assert_eq!(numbers, [(1, &b"a"[..]), (4, &b"b\r"[..])]);
}

#[tokio::test]
async fn all_valid_lines_are_queued_with_the_service() {
    let intake = intake(all_queued);
    let answer = accepted(take(&intake, b"{\"message\":\"a\"}\n{\"message\":\"b\"}", options(None)).await);
    assert_eq!((answer["accepted"].as_u64(), answer["rejected"].as_u64()), (Some(2), Some(0)));
    assert_eq!(answer["not_queued"], 0);
    assert!(answer.get("queued_lines").is_none(), "ranges are listed only when some lines were not queued");
    let stored = intake.sink.stored();
    assert_eq!(stored.queued.len(), 2);
    assert!(stored.queued.iter().all(|(_, service)| service.as_deref() == Some("checkout")));
    assert!(stored.dead_letters.is_empty());
}

#[tokio::test]
async fn invalid_lines_become_dead_letters_and_errors_by_line() {
    let intake = intake(all_queued);
    let answer = accepted(take(&intake, BODY, options(None)).await);
    assert_eq!((answer["accepted"].as_u64(), answer["rejected"].as_u64()), (Some(2), Some(1)));
    assert_eq!(answer["rejected_by_reason"], json!({ "not_json": 1 }));
    assert_eq!(answer["errors"][0]["line"], 3);
    let stored = intake.sink.stored();
    assert_eq!(stored.dead_letters.len(), 1);
    assert_eq!(stored.dead_letters[0].0, "not_json");
    assert!(stored.dead_letters[0].1.starts_with("line 3: "), "{}", stored.dead_letters[0].1);
}

#[tokio::test]
async fn a_queue_failing_part_way_lists_the_queued_and_not_queued_ranges() {
    // Lines saying "late" time out; the first one stops the rest of the body.
    let intake = intake(|line| {
        if line.windows(4).any(|w| w == b"late") {
            Delivery::Failed { error: "Message timed out".into(), only_this_line: false }
        } else {
            Delivery::Queued
        }
    });
    let body =
        b"{\"message\":\"a\"}\n{\"message\":\"b\"}\n{\"message\":\"late\"}\n{\"message\":\"d\"}\n{\"message\":\"e\"}";
    let answer = accepted(take(&intake, body, options(None)).await);
    assert_eq!(answer["accepted"], 2);
    assert_eq!(answer["not_queued"], 3);
    assert_eq!(answer["queued_lines"], json!([[1, 2]]));
    assert_eq!(answer["not_queued_lines"], json!([[3, 5]]));
    let messages: Vec<&str> =
        answer["errors"].as_array().unwrap().iter().map(|e| e["message"].as_str().unwrap()).collect();
    assert!(messages[0].starts_with("the queue did not acknowledge it: Message timed out"), "{messages:?}");
    assert!(messages[1].starts_with("not sent: the queue failed an earlier line"), "{messages:?}");
    assert_eq!(intake.sink.stored().queued.len(), 2, "nothing is sent after the queue failed");
}

#[tokio::test]
async fn a_queue_taking_nothing_keeps_nothing_and_releases_the_key() {
    let intake =
        intake(|_| Delivery::Failed { error: "Local: Broker transport failure".into(), only_this_line: false });
    let outcome = take(&intake, BODY, options(Some(("k1", b"hash")))).await;
    let IntakeOutcome::QueueDown { body } = outcome else { panic!("expected QueueDown, got {outcome:?}") };
    assert_eq!(body["error"], "kafka_unavailable");
    assert!(body["message"].as_str().unwrap().contains("within 1500 ms (Local: Broker transport failure)"));
    assert_eq!((body["accepted"].as_u64(), body["rejected"].as_u64()), (Some(0), Some(1)));
    let stored = intake.sink.stored();
    assert!(stored.dead_letters.is_empty(), "the retry stores the dead letters");
    assert!(stored.keys.is_empty(), "the key is released for the retry");
}

#[tokio::test]
async fn dead_letters_not_stored_means_nothing_is_queued() {
    let mut intake = intake(all_queued);
    intake.sink.dead_letters_fail = true;
    let result = intake.take(Lines::Body(BODY), options(Some(("k1", b"hash"))), &log()).await;
    assert!(matches!(result, Err(IntakeError::DeadLettersNotStored(_))), "{result:?}");
    let stored = intake.sink.stored();
    assert!(stored.queued.is_empty());
    assert!(stored.keys.is_empty(), "the key is released for the retry");
}

#[tokio::test]
async fn the_same_key_and_body_gets_the_recorded_answer() {
    let intake = intake(all_queued);
    let first = take(&intake, BODY, options(Some(("k1", b"hash")))).await;
    let IntakeOutcome::Accepted { body } = first else { panic!("expected Accepted, got {first:?}") };
    let again = take(&intake, BODY, options(Some(("k1", b"hash")))).await;
    assert_eq!(again, IntakeOutcome::Replayed { status: ACCEPTED_STATUS, body });
    let stored = intake.sink.stored();
    assert_eq!(stored.queued.len(), 2, "the replay queued nothing");
    assert_eq!(stored.dead_letters.len(), 1, "the replay stored no dead letters");
    assert_eq!(stored.sessions_ended, 2);
}

#[tokio::test]
async fn a_twin_still_running_is_told_the_key_is_in_use() {
    let intake = intake(all_queued);
    // The twin claimed the key and has no answer yet.
    let mut twin = Session::default();
    assert_eq!(intake.sink.claim(&mut twin, "k1", b"hash").await, Ok(Claim::Claimed));
    let outcome = take(&intake, BODY, options(Some(("k1", b"hash")))).await;
    assert!(matches!(outcome, IntakeOutcome::KeyInUse { .. }), "{outcome:?}");
    assert!(intake.sink.stored().queued.is_empty());
}

#[tokio::test]
async fn the_same_key_with_another_body_is_refused() {
    let intake = intake(all_queued);
    accepted(take(&intake, BODY, options(Some(("k1", b"hash")))).await);
    let outcome = take(&intake, b"{\"message\":\"other\"}", options(Some(("k1", b"other hash")))).await;
    assert_eq!(outcome, IntakeOutcome::KeyReused);
    assert_eq!(intake.sink.stored().queued.len(), 2, "the other body queued nothing");
}

#[tokio::test]
async fn a_dry_run_resolves_every_line_and_stores_nothing() {
    let intake = intake(all_queued);
    let outcome = take(&intake, BODY, IntakeOptions { dry_run: true, ..options(Some(("k1", b"hash"))) }).await;
    let IntakeOutcome::DryRun { lines } = outcome else { panic!("expected DryRun, got {outcome:?}") };
    assert_eq!(lines.len(), 3);
    assert_eq!((lines[0]["line"].as_u64(), lines[0]["event"]["service"].as_str()), (Some(1), Some("checkout")));
    assert_eq!((lines[1]["line"].as_u64(), lines[1]["reject"]["reason"].as_str()), (Some(3), Some("not_json")));
    let stored = intake.sink.stored();
    assert!(stored.queued.is_empty() && stored.dead_letters.is_empty() && stored.keys.is_empty());
}

//! Fuzzing the parsers a network client reaches: the harness the crates' fuzz tests share
//! (a dev-dependency only; nothing here ships in the binary).
//!
//! A target is a function that must hold for any input: it may reject the input, never panic,
//! and it checks its properties (a value that parses prints back to what parses to it again;
//! a manifest's references are exactly those its JSON names). [`fuzz`] runs a target on every
//! file of its corpus (`fuzz/corpus/<target>/` in the workspace, kept in the repository), then
//! on inputs proptest derives from the corpus by mutation (bytes replaced, inserted, removed,
//! two entries spliced) and on arbitrary bytes, shrinking any failure to a small input and
//! saving it to `fuzz/crashes/<target>/` so that it can be added to the corpus once fixed.
//!
//! `FUZZ_CASES` sets how many generated inputs each target gets (256 by default: the short
//! run `scripts/test` makes; `scripts/fuzz` makes a long one).

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};

/// The workspace's `fuzz/` folder.
fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

/// The corpus of `target`, sorted by file name.
pub fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = fuzz_dir().join("corpus").join(target);
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_file()).collect(),
        Err(e) => panic!("fuzz target {target}: no corpus at {}: {e}", dir.display()),
    };
    files.sort();
    assert!(!files.is_empty(), "fuzz target {target}: the corpus at {} is empty", dir.display());
    files.iter().map(|p| std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).collect()
}

/// How many generated inputs each target gets.
pub fn cases() -> u32 {
    std::env::var("FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256)
}

/// One change to an input.
#[derive(Debug, Clone)]
enum Edit {
    Set(usize, u8),
    Insert(usize, Vec<u8>),
    Remove(usize, usize),
    /// Appends the tail of another corpus entry from this offset.
    Splice(usize, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    // Bytes that matter to the parsers here: separators, quotes, digits, JSON and path syntax.
    let interesting = prop::sample::select(b"/:@.-_{}[]\",=0123456789abcdefz \n\t\0\xff".to_vec());
    let byte = prop_oneof![3 => interesting, 1 => any::<u8>()];
    prop_oneof![
        4 => (any::<usize>(), byte.clone()).prop_map(|(i, b)| Edit::Set(i, b)),
        3 => (any::<usize>(), prop::collection::vec(byte, 1..8)).prop_map(|(i, v)| Edit::Insert(i, v)),
        2 => (any::<usize>(), 1usize..16).prop_map(|(i, n)| Edit::Remove(i, n)),
        1 => (any::<usize>(), any::<usize>()).prop_map(|(e, i)| Edit::Splice(e, i)),
    ]
}

fn apply(seed: &[u8], edits: &[Edit], corpus: &[Vec<u8>]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for e in edits {
        match e {
            Edit::Set(i, b) if !v.is_empty() => {
                let i = i % v.len();
                v[i] = *b;
            }
            Edit::Insert(i, bytes) => {
                let i = i % (v.len() + 1);
                v.splice(i..i, bytes.iter().copied());
            }
            Edit::Remove(i, n) if !v.is_empty() => {
                let i = i % v.len();
                let end = (i + n).min(v.len());
                v.drain(i..end);
            }
            Edit::Splice(e, i) => {
                let other = &corpus[e % corpus.len()];
                let i = i % (other.len() + 1);
                let keep = v.len() / 2;
                v.truncate(keep);
                v.extend_from_slice(&other[i..]);
            }
            _ => {}
        }
    }
    v
}

/// Runs `check` on the corpus of `target` and on [`cases`] inputs derived from it, then on
/// as many arbitrary byte strings; panics with the smallest failing input found.
pub fn fuzz(target: &str, check: impl Fn(&[u8])) {
    // A panic ends the run: nothing observes state a panicking check left behind.
    let run = |input: &[u8]| std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(input)));
    let corpus = corpus(target);
    for (i, input) in corpus.iter().enumerate() {
        if let Err(e) = run(input) {
            save_and_fail(target, input, &format!("corpus entry {i} fails: {}", panic_text(&e)));
        }
    }
    let config = Config { cases: cases(), failure_persistence: None, ..Config::default() };
    let derived = (0..corpus.len(), prop::collection::vec(edit(), 1..6))
        .prop_map(|(seed, edits)| apply(&corpus[seed], &edits, &corpus));
    let arbitrary = prop::collection::vec(any::<u8>(), 0..512);
    let inputs = prop_oneof![4 => derived, 1 => arbitrary];
    let mut runner = TestRunner::new(config);
    let result = runner.run(&inputs, |input| run(&input).map_err(|e| TestCaseError::fail(panic_text(&e))));
    if let Err(TestError::Fail(reason, input)) = result {
        save_and_fail(target, &input, &reason.to_string());
    } else if let Err(e) = result {
        panic!("fuzz target {target}: {e}");
    }
}

fn panic_text(e: &Box<dyn std::any::Any + Send>) -> String {
    e.downcast_ref::<String>().cloned().or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default()
}

fn save_and_fail(target: &str, input: &[u8], reason: &str) -> ! {
    let dir = fuzz_dir().join("crashes").join(target);
    let name = {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        input.hash(&mut h);
        format!("{:016x}", h.finish())
    };
    let saved = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(dir.join(&name), input));
    let at = match saved {
        Ok(()) => format!("saved to {}", dir.join(&name).display()),
        Err(e) => format!("not saved: {e}"),
    };
    panic!("fuzz target {target}: {reason}\ninput ({at}): {:?}", String::from_utf8_lossy(input));
}

#[cfg(test)]
mod tests {
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

    /// The harness runs the check on inputs beyond its corpus, finds a bug the corpus does not
    /// show (a NUL byte, which mutation and arbitrary bytes bring in), and says where.
    #[test]
    fn finds_a_planted_bug() {
        let found = std::panic::catch_unwind(|| {
            super::fuzz("self-test", |input| {
                let s = String::from_utf8_lossy(input);
                RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                assert!(!s.contains('\0'), "planted");
            })
        });
        let runs = RUNS.load(std::sync::atomic::Ordering::Relaxed);
        let message = found.expect_err(&format!("the planted bug was not found in {runs} runs"));
        let text = super::panic_text(&message);
        assert!(text.contains("planted") && text.contains("self-test"), "{text}");
        let _ = std::fs::remove_dir_all(super::fuzz_dir().join("crashes").join("self-test"));
    }
}

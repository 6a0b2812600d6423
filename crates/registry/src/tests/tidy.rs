//! Rules of the code that are easier to check than to remember: `lib.rs` declares the modules
//! in layer order and a module names (`crate::<module>`) only modules declared before it; every
//! Rust file of the workspace opens with a `//!` comment saying what it owns.

use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The modules `lib.rs` declares, in order.
fn modules() -> Vec<String> {
    let lib = std::fs::read_to_string(src().join("lib.rs")).unwrap();
    lib.lines()
        .filter_map(|l| l.strip_prefix("mod ").and_then(|r| r.strip_suffix(';')))
        .filter(|m| *m != "tests")
        .map(str::to_owned)
        .collect()
}

/// The modules of this crate that `text` names as `crate::<module>`.
fn named(text: &str, modules: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for (i, _) in text.match_indices("crate::") {
        let rest = &text[i + "crate::".len()..];
        // `crate::{a, b::c}` names `a` and `b`.
        let heads: Vec<&str> = match rest.strip_prefix('{') {
            Some(group) => group.split('}').next().unwrap_or("").split(',').map(|p| p.trim()).collect(),
            None => vec![rest],
        };
        for head in heads {
            let word: String = head.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            if modules.contains(&word) {
                out.push(word);
            }
        }
    }
    out
}

#[test]
fn modules_name_only_modules_declared_before_them() {
    let modules = modules();
    assert!(modules.len() > 10, "{modules:?}");
    let mut wrong = Vec::new();
    for (i, m) in modules.iter().enumerate() {
        let text = std::fs::read_to_string(src().join(format!("{m}.rs"))).unwrap();
        // Unit tests at the bottom of a file may reach further.
        let code = text.split("#[cfg(test)]").next().unwrap();
        for n in named(code, &modules) {
            let j = modules.iter().position(|x| *x == n).unwrap();
            if j >= i && n != *m {
                wrong.push(format!("{m} (#{i}) names {n} (#{j})"));
            }
        }
    }
    assert!(wrong.is_empty(), "layer order broken:\n{}", wrong.join("\n"));
}

#[test]
fn every_rust_file_opens_with_a_module_comment() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut stack = vec![workspace.join("crates")];
    let mut missing = Vec::new();
    let mut seen = 0;
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                seen += 1;
                let text = std::fs::read_to_string(&p).unwrap();
                if !text.trim_start().starts_with("//!") {
                    missing.push(p.display().to_string());
                }
            }
        }
    }
    assert!(seen > 50, "found only {seen} files");
    assert!(missing.is_empty(), "files without a //! comment:\n{}", missing.join("\n"));
}

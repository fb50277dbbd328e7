//! `check` finds damage and names the pack and the snapshots it hurts (exit code 4);
//! `stats` counts what the snapshots hold and what deduplication and compression save.

mod common;
use common::*;
use std::fs;
use std::path::{Path, PathBuf};

fn packs(src: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for d in fs::read_dir(src.join(".pluto/packs")).unwrap().flatten() {
        for f in fs::read_dir(d.path()).unwrap().flatten() {
            out.push(f.path());
        }
    }
    out.sort_by_key(|p| std::cmp::Reverse(fs::metadata(p).unwrap().len()));
    out
}

#[test]
fn a_corrupt_pack_is_named_with_the_snapshots_it_affects() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("t");
    write(&src.join("shared.bin"), &pseudo_random(2_000_000, 1));
    ok(&src, &["init"]);
    let first = json(&src, &["snapshot", "--json"])["id"]
        .as_str()
        .unwrap()
        .to_string();
    write(&src.join("later.txt"), b"only in the second snapshot");
    let second = json(&src, &["snapshot", "--json"])["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(ok(&src, &["check", "--read-data"]).contains("no errors"));

    let pack = packs(&src).remove(0);
    let pack_id = pack.file_name().unwrap().to_str().unwrap().to_string();
    let mut bytes = fs::read(&pack).unwrap();
    bytes[500_000] ^= 0x80;
    fs::write(&pack, &bytes).unwrap();

    // Without --read-data the headers still agree; reading the data finds it.
    let o = pluto(&src, &["check", "--read-data"]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains(&format!("error: pack {pack_id}")), "{out}");
    assert!(out.contains("REPOSITORY DAMAGED"), "{out}");
    assert!(
        out.contains(&first[..8]) && out.contains(&second[..8]),
        "{out}"
    );

    let o = pluto(&src, &["check", "--read-data", "--json"]);
    assert_eq!(o.status.code(), Some(4));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["ok"], false);
    let named: Vec<&serde_json::Value> = v["errors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["name"] == pack_id.as_str())
        .collect();
    assert!(!named.is_empty(), "{v}");
    let mut affected: Vec<String> = named[0]["affected_snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    affected.sort();
    let mut both = vec![first, second];
    both.sort();
    assert_eq!(affected, both);

    // Restoring names the damaged file and restores the rest: a partial restore.
    let target = tmp.path().join("r");
    let err = fails(
        &src,
        &["checkout", "latest", "--target", target.to_str().unwrap()],
        3,
    );
    assert!(
        err.contains("not restored") && err.contains("shared.bin"),
        "{err}"
    );
    assert!(
        !target.join("shared.bin").exists(),
        "no file with wrong content"
    );
    assert_eq!(
        fs::read(target.join("later.txt")).unwrap(),
        b"only in the second snapshot"
    );
}

#[test]
fn check_read_data_subset_reads_part_of_the_packs() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("t");
    write(&src.join("f0"), b"first");
    ok(&src, &["init"]);
    // A file added per snapshot: several packs to choose from.
    for i in 0..4 {
        write(&src.join(format!("f{i}")), &pseudo_random(100_000, i));
        ok(&src, &["snapshot"]);
    }
    let all = json(&src, &["check", "--read-data", "--json"]);
    let some = json(&src, &["check", "--read-data-subset", "50%", "--json"]);
    let (n, k) = (
        all["packs_read"].as_u64().unwrap(),
        some["packs_read"].as_u64().unwrap(),
    );
    assert_eq!(k, n.div_ceil(2), "half of {n} packs, rounded up");
    for bad in ["0%", "150%", "lots"] {
        let err = fails(&src, &["check", "--read-data-subset", bad], 1);
        assert!(err.contains("--read-data-subset"), "{err}");
    }
}

#[test]
fn stats_count_dedup_and_compression() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("t");
    let random = pseudo_random(1_000_000, 5);
    write(&src.join("a.bin"), &random);
    write(&src.join("copy-of-a.bin"), &random);
    let text = b"the same sentence again and again, compressible\n".repeat(20_000);
    write(&src.join("text.txt"), &text);
    ok(&src, &["init"]);
    let one = json(&src, &["snapshot", "--json"])["id"]
        .as_str()
        .unwrap()
        .to_string();
    ok(&src, &["snapshot", "--force-read"]);

    let v = json(&src, &["stats", &one, "--json"]);
    let u = &v["snapshots"][0]["usage"];
    assert_eq!(v["snapshots"].as_array().unwrap().len(), 1);
    assert_eq!(u["files"], 3);
    let logical = 2_000_000 + text.len() as u64;
    assert_eq!(u["logical_bytes"].as_u64(), Some(logical));
    let unique = u["unique_bytes"].as_u64().unwrap();
    assert_eq!(
        unique,
        1_000_000 + text.len() as u64,
        "the copy is stored once"
    );
    let stored = u["stored_bytes"].as_u64().unwrap();
    assert!(
        stored < 1_000_000 + text.len() as u64 / 10,
        "text compresses: {stored}"
    );
    assert!(u["dedup_ratio"].as_f64().unwrap() > 1.4, "{u}");
    assert!(u["compression_ratio"].as_f64().unwrap() > 1.5, "{u}");

    // The repository: two snapshots of the same tree are stored once.
    let r = &json(&src, &["stats", "--json"])["repository"];
    assert_eq!(r["snapshots"], 2);
    assert_eq!(r["usage"]["logical_bytes"].as_u64(), Some(2 * logical));
    assert_eq!(r["usage"]["unique_bytes"].as_u64(), Some(unique));
    assert_eq!(r["usage"]["stored_bytes"].as_u64(), Some(stored));
    assert!(r["pack_bytes"].as_u64().unwrap() >= stored);
    let table = ok(&src, &["stats"]);
    assert!(table.contains("all snapshots"), "{table}");
    assert!(table.contains(&one[..8]), "{table}");
}

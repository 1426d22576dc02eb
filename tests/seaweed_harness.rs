//! Tests of the SeaweedFS harness itself (`common::seaweed`): a `weed mini` starts on
//! free ports and answers signed requests, two at once do not collide, the plain client
//! sees what was put (keys, sizes, ETags, user metadata, unfinished multipart uploads),
//! restart keeps data, kill makes the endpoint refuse, and the cluster serves reads
//! with a volume server killed and comes back after a gateway restart. Each test
//! prints what it measured (start-up time, memory) for the module's `//!`.

use crate::common::seaweed::{Cluster, S3Endpoint, Seaweed, accepts};
use std::collections::BTreeSet;
use std::process::Command;

/// The hex MD5 of `data`, as S3 gives a single PUT's ETag (via md5sum: no MD5 crate).
fn md5_hex(data: &[u8]) -> String {
    use std::io::Write;
    let mut child = Command::new("md5sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

#[test]
fn mini_starts_on_free_ports_and_answers_signed_requests() {
    let weed = Seaweed::mini();
    eprintln!(
        "weed mini: ready in {:?}, {:?} CPU, {} KiB resident",
        weed.started_in(),
        weed.cpu_time(),
        weed.rss_kib().unwrap_or(0)
    );
    assert!(weed.endpoint().starts_with("http://127.0.0.1:"));
    weed.s3_answers().unwrap();
    for port in weed.ports() {
        assert!(accepts(port), "port {port} of weed mini does not accept");
    }
    // Wrong credentials are refused: the server checks signatures.
    let bucket = weed.new_bucket("auth");
    let mut cmd = weed.rclone();
    cmd.env("AWS_SECRET_ACCESS_KEY", "wrong")
        .arg("lsjson")
        .arg(weed.rclone_remote(&bucket, ""));
    let out = cmd.output().unwrap();
    assert!(!out.status.success(), "a wrong secret was accepted");
}

#[test]
fn two_minis_at_once_do_not_collide() {
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(Seaweed::mini);
        let b = s.spawn(Seaweed::mini);
        (a.join().unwrap(), b.join().unwrap())
    });
    let ports_a: BTreeSet<u16> = a.ports().into_iter().collect();
    let ports_b: BTreeSet<u16> = b.ports().into_iter().collect();
    assert!(
        ports_a.is_disjoint(&ports_b),
        "{ports_a:?} and {ports_b:?} overlap"
    );
    for server in [&a, &b] {
        server.create_bucket("same-name");
    }
    a.put("same-name", "only-in-a", b"a");
    assert_eq!(a.list("same-name", "").len(), 1);
    assert!(b.list("same-name", "").is_empty(), "b sees a's object");
    assert_ne!(a.dir(), b.dir());
}

#[test]
fn put_objects_are_listed_with_size_etag_and_metadata() {
    let weed = Seaweed::shared();
    let bucket = weed.new_bucket("listing");
    let keys = [
        "a.txt",
        "dir/b c+d&é.txt",
        "dir/sub/e",
        "other/f",
        "dir/ünïcode ☃",
    ];
    for (i, key) in keys.iter().enumerate() {
        weed.put(&bucket, key, format!("content {i}").as_bytes());
    }
    weed.put_with_metadata(
        &bucket,
        "dir/meta",
        b"with metadata",
        &[("Datasafe-Mode", "100644"), ("mtime", "1700000000.5")],
    );

    let all = weed.list(&bucket, "");
    let listed: Vec<&str> = all.iter().map(|o| o.key.as_str()).collect();
    let mut expected: Vec<&str> = keys.iter().copied().chain(["dir/meta"]).collect();
    expected.sort();
    assert_eq!(listed, expected);
    let a = &all[0];
    assert_eq!(a.size, 9);
    assert_eq!(a.etag.as_deref(), Some(md5_hex(b"content 0").as_str()));
    assert!(a.mtime.is_some());
    let meta = all.iter().find(|o| o.key == "dir/meta").unwrap();
    // SeaweedFS keeps metadata names lowercased, whatever case was sent.
    assert_eq!(
        meta.metadata.get("datasafe-mode").map(String::as_str),
        Some("100644"),
        "{meta:?}"
    );
    assert_eq!(
        meta.metadata.get("mtime").map(String::as_str),
        Some("1700000000.5")
    );

    // A prefix, and a listing two keys a page (continuation tokens).
    let dir: Vec<String> = weed
        .list_keys(&bucket, "dir/", 2)
        .into_iter()
        .map(|o| o.key)
        .collect();
    let mut expected_dir: Vec<&str> = expected
        .iter()
        .copied()
        .filter(|k| k.starts_with("dir/"))
        .collect();
    expected_dir.sort();
    assert_eq!(dir, expected_dir);
    assert_eq!(weed.get(&bucket, "dir/b c+d&é.txt"), b"content 1");
    assert!(weed.try_get(&bucket, "missing").is_err());
}

#[test]
fn an_unfinished_multipart_upload_is_listed() {
    let weed = Seaweed::shared();
    let bucket = weed.new_bucket("multipart");
    assert!(weed.list_multipart_uploads(&bucket).is_empty());
    let id = weed.create_multipart_upload(&bucket, "big/file name.bin");
    weed.upload_part(&bucket, "big/file name.bin", &id, 1, &[7u8; 1000]);
    let uploads = weed.list_multipart_uploads(&bucket);
    assert_eq!(uploads.len(), 1, "{uploads:?}");
    assert_eq!(uploads[0].key, "big/file name.bin");
    assert_eq!(uploads[0].upload_id, id);
    // An unfinished upload is no object.
    assert!(weed.list(&bucket, "").is_empty());
}

#[test]
fn the_shared_server_is_one_and_buckets_are_apart() {
    let a = Seaweed::shared();
    let b = Seaweed::shared();
    assert_eq!(a.endpoint(), b.endpoint());
    let (x, y) = (a.new_bucket("apart"), a.new_bucket("apart"));
    assert_ne!(x, y);
    a.put(&x, "k", b"1");
    assert!(a.list(&y, "").is_empty());
}

#[test]
fn a_put_into_a_missing_bucket_is_no_such_bucket_and_makes_none() {
    // weed creates the bucket on a first upload unless told not to; AWS never does.
    let weed = Seaweed::shared();
    let bucket = format!("ds-{}-never-made", std::process::id());
    let (status, body) = weed.curl(&["-T", "/dev/null"], &format!("/{bucket}/key"));
    let body = String::from_utf8_lossy(&body);
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("<Code>NoSuchBucket</Code>"), "{body}");
    let (status, _) = weed.curl(&["-I"], &format!("/{bucket}"));
    assert_eq!(status, 404, "the PUT made the bucket");
}

#[test]
fn env_reaches_a_child_without_the_proxy_ca_bundle() {
    let weed = Seaweed::shared();
    let mut cmd = Command::new("sh");
    cmd.args([
        "-c",
        "echo \"$AWS_ENDPOINT_URL|$AWS_ACCESS_KEY_ID|$AWS_REGION|${AWS_CA_BUNDLE-unset}\"",
    ]);
    // Whatever this machine sets, the child must not see a CA bundle.
    weed.set_env(&mut cmd);
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.trim(),
        format!(
            "{}|{}|us-east-1|unset",
            weed.endpoint(),
            crate::common::seaweed::ACCESS_KEY
        )
    );
}

#[test]
fn restart_keeps_data_and_kill_makes_the_endpoint_refuse() {
    let weed = Seaweed::mini();
    let bucket = weed.new_bucket("restart");
    weed.put(&bucket, "kept", b"before restart");
    let before = weed.list(&bucket, "");
    assert!(weed.data_dir().starts_with(weed.dir()));

    let stopping = std::time::Instant::now();
    weed.stop();
    let stopped_in = stopping.elapsed();
    weed.restart();
    eprintln!(
        "weed mini: stopped (SIGTERM) in {stopped_in:?}, started again in {:?}",
        weed.started_in()
    );
    assert_eq!(weed.list(&bucket, ""), before);
    assert_eq!(weed.get(&bucket, "kept"), b"before restart");

    weed.put(&bucket, "after", b"written before the kill");
    weed.kill();
    assert!(!weed.is_running());
    assert!(weed.log().contains("S3"), "the log is kept across starts");
    for port in weed.ports() {
        assert!(!accepts(port), "port {port} still accepts after the kill");
    }
    assert!(weed.s3_answers().is_err());

    // A crash loses nothing acknowledged: the volume files are on disk.
    weed.restart();
    assert_eq!(weed.get(&bucket, "after"), b"written before the kill");
}

#[test]
fn cluster_serves_reads_without_a_volume_server_and_after_a_gateway_restart() {
    let cluster = Cluster::start();
    assert!(cluster.volume_dir(0).starts_with(cluster.dir()));
    eprintln!(
        "cluster: ready in {:?}, {} KiB resident (5 processes)",
        cluster.started_in(),
        cluster.rss_kib()
    );
    let bucket = cluster.new_bucket("cluster");
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    cluster.put(&bucket, "replicated", &data);
    // Replication 001: the volume files exist on both servers.
    for i in 0..2 {
        let dats = std::fs::read_dir(cluster.volume_dir(i))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "dat"))
            })
            .count();
        assert!(dats > 0, "volume server {i} holds no volume");
    }

    for i in 0..2 {
        cluster.kill_volume(i);
        assert!(!cluster.volume_running(i));
        assert_eq!(
            cluster.get(&bucket, "replicated"),
            data,
            "read with volume server {i} killed"
        );
        cluster.restart_volume(i);
    }
    cluster.put(&bucket, "after", b"both servers back");

    cluster.restart_s3();
    assert_eq!(cluster.get(&bucket, "replicated"), data);
    cluster.kill_s3();
    assert!(cluster.s3_answers().is_err());
    cluster.restart_s3();
    assert_eq!(cluster.get(&bucket, "after"), b"both servers back");
}

use super::*;

fn spool(bound: u64) -> (tempfile::TempDir, Spool) {
    let root = tempfile::tempdir().unwrap();
    let spool = Spool::create(root.path().join("try"), bound).unwrap();
    (root, spool)
}

/// Everything from `offset` to the end, in batches of `max`, without acknowledging.
fn read_from(spool: &Spool, mut offset: u64, max: usize) -> Vec<u8> {
    let mut out = Vec::new();
    while let Next::Send { offset: at, data } = spool.next(offset, max).unwrap() {
        assert_eq!(at, offset);
        offset += data.len() as u64;
        out.extend_from_slice(&data);
    }
    out
}

fn numbered(from: usize, to: usize) -> Vec<Vec<u8>> {
    (from..to).map(|i| format!("line {i}\n").into_bytes()).collect()
}

#[test]
fn sends_from_the_acknowledged_offset_again_across_segments() {
    let (_root, spool) = spool(64 * 1024 * 1024);
    // About 3.5 segments of numbered lines.
    let lines = numbered(0, 350_000);
    let all: Vec<u8> = lines.concat();
    assert!(all.len() as u64 > 3 * SEGMENT_BYTES);
    for line in &lines {
        spool.write(line);
    }
    assert_eq!(spool.written(), all.len() as u64);
    assert_eq!(read_from(&spool, 0, 100_000), all);

    // An ack mid-segment: the same bytes are sent again from there (a lost answer, another
    // coordinator after a failover); segments wholly before it are gone from disk.
    let acked = SEGMENT_BYTES + 12_345;
    spool.ack(acked);
    assert_eq!(spool.acked(), acked);
    assert_eq!(read_from(&spool, acked, 77_777), all[acked as usize..]);
    let files = std::fs::read_dir(&spool.state.lock().unwrap().dir)
        .unwrap()
        .count();
    assert_eq!(files, 3, "the first segment was acknowledged whole and removed");
    assert!(spool.next(acked - 1, 10).is_err(), "acknowledged bytes are gone");

    // Only a close ends the stream, once everything is acknowledged.
    spool.ack(all.len() as u64);
    assert_eq!(spool.next(all.len() as u64, 10).unwrap(), Next::Wait);
    spool.close();
    assert_eq!(spool.next(all.len() as u64, 10).unwrap(), Next::Done);
}

#[test]
fn past_the_bound_output_is_dropped_and_the_log_says_how_much() {
    let (_root, spool) = spool(30);
    spool.write(b"0123456789\n"); // 11
    spool.write(b"abcdefghij\n"); // 22
    spool.write(b"dropped one\n"); // 12 more would pass 30
    spool.write(b"and two!!\n"); // 10 more would pass 30 too
    assert_eq!(spool.written(), 22);
    // The coordinator took the first line: there is room again, the marker comes first.
    spool.ack(11);
    spool.write(b"kept\n");
    let marker = b"[goflow: 22 bytes of output dropped: spool full]\n";
    let mut expected = b"abcdefghij\n".to_vec();
    expected.extend_from_slice(marker);
    expected.extend_from_slice(b"kept\n");
    assert_eq!(read_from(&spool, 11, 1000), expected);

    // Dropped at the end: the marker is written at close, whatever the bound.
    spool.write(&[b'x'; 40]);
    spool.close();
    let mut end = expected.clone();
    end.extend_from_slice(b"[goflow: 40 bytes of output dropped: spool full]\n");
    assert_eq!(read_from(&spool, 11, 1000), end);
    spool.write(b"after close\n");
    assert_eq!(spool.written(), 11 + end.len() as u64);
}

/// A sender that stops (a failed call, a new connection) and a new one that starts from the
/// spool's acknowledged offset together deliver every byte once.
#[test]
fn a_new_sender_starts_where_the_last_acknowledgement_left_off() {
    let (_root, spool) = spool(1 << 20);
    let mut stored = Vec::new();
    for line in numbered(0, 100) {
        spool.write(&line);
    }
    // The first sender ships one batch, which is acknowledged, then sends another whose answer
    // never comes.
    let Next::Send { offset, data } = spool.next(spool.acked(), 100).unwrap() else {
        panic!("data to send")
    };
    stored.extend_from_slice(&data);
    spool.ack(offset + data.len() as u64);
    let Next::Send { .. } = spool.next(spool.acked(), 100).unwrap() else {
        panic!("data to send")
    };
    for line in numbered(100, 150) {
        spool.write(&line);
    }
    spool.close();
    // The next sender.
    let mut at = spool.acked();
    loop {
        match spool.next(at, 333).unwrap() {
            Next::Send { offset, data } => {
                assert_eq!(offset as usize, stored.len());
                stored.extend_from_slice(&data);
                at += data.len() as u64;
                spool.ack(at);
            }
            Next::Done => break,
            Next::Wait => panic!("closed: nothing more to wait for"),
        }
    }
    assert_eq!(stored, numbered(0, 150).concat());
}

#[test]
fn a_try_without_output_leaves_no_folder() {
    let (root, spool) = spool(1 << 20);
    spool.close();
    assert_eq!(spool.next(0, 100).unwrap(), Next::Done);
    drop(spool);
    assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0);
}

#[test]
fn the_folder_comes_with_the_first_output_and_goes_with_the_last_handle() {
    let (root, spool) = spool(1 << 20);
    let dir = root.path().join("try");
    assert!(!dir.exists(), "no output, no folder");
    spool.write(b"hello\n");
    assert!(dir.exists());
    let other = spool.clone();
    drop(spool);
    assert!(dir.exists());
    drop(other);
    assert!(!dir.exists());
}

#[test]
fn try_folders_are_safe_names() {
    let root = Path::new("/spool");
    assert_eq!(try_dir(root, "12-3"), Path::new("/spool/12-3"));
    assert_eq!(try_dir(root, "../etc"), Path::new("/spool/___etc"));
}

use super::*;
use std::io::Read;

fn h<'a>(name: &'a str, value: &'a str) -> Header<'a> {
    Header {
        name: name.as_bytes(),
        value: value.as_bytes(),
    }
}

fn read_all(c: &MessageCapture) -> Vec<u8> {
    let mut out = Vec::new();
    // A small buffer, to cross every part boundary.
    let mut r = c.reader();
    let mut buf = [0u8; 7];
    loop {
        let n = r.read(&mut buf).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&buf[..n]);
    }
}

#[test]
fn headers_keep_spacing_folding_and_order() {
    let mut c = MessageCapture::default();
    c.record_header(&h("Subject", "  two spaces"), true)
        .unwrap();
    c.record_header(&h("X-Folded", " a\n\tb\r\n c"), true)
        .unwrap();
    c.record_header(&h("X-None", "tight"), true).unwrap();
    assert!(c.headers_exact());
    assert_eq!(
        c.header_block(),
        b"Subject:  two spaces\r\nX-Folded: a\r\n\tb\r\n c\r\nX-None:tight\r\n"
    );
    let hs: Vec<_> = c.headers().collect();
    assert_eq!(hs.len(), 3);
    assert_eq!(hs[1].name, b"X-Folded");
    assert_eq!(hs[1].value, b" a\r\n\tb\r\n c");
    assert_eq!(hs[2].value, b"tight");
}

#[test]
fn without_leading_space_one_space_is_put_back() {
    let mut c = MessageCapture::default();
    c.record_header(&h("Subject", "hi"), false).unwrap();
    assert_eq!(c.header_block(), b"Subject: hi\r\n");
    assert!(!c.headers_exact());
}

#[test]
fn small_bodies_stay_in_memory_and_round_trip() {
    static B: CaptureBudget = CaptureBudget::new(1 << 20);
    let mut c = MessageCapture::new(CaptureOptions::default().budget(&B));
    c.record_header(&h("From", " a@example.com"), true).unwrap();
    c.body(b"line 1\r\n").unwrap();
    c.body(b"line 2\r\n").unwrap();
    assert!(!c.is_spilled());
    assert_eq!(
        read_all(&c),
        b"From: a@example.com\r\n\r\nline 1\r\nline 2\r\n"
    );
    assert_eq!(B.used(), c.memory_used());
    assert!(B.used() >= 16);
    drop(c);
    assert_eq!(B.used(), 0);
}

#[test]
fn the_per_message_limit_spills_the_rest_in_order() {
    static B: CaptureBudget = CaptureBudget::new(1 << 20);
    let mut c = MessageCapture::new(CaptureOptions::default().budget(&B).memory_per_message(10));
    let mut expected = b"\r\n".to_vec();
    for i in 0..100u8 {
        let chunk = vec![b'a' + i % 26; 3 + usize::from(i % 5)];
        c.body(&chunk).unwrap();
        expected.extend_from_slice(&chunk);
    }
    assert!(c.is_spilled());
    assert!(c.memory_used() <= 10);
    assert_eq!(c.spilled_bytes() + c.memory_used() as u64, c.body_len());
    assert_eq!(read_all(&c), expected);
    assert_eq!(c.body_len(), expected.len() as u64 - 2);
    c.clear();
    assert_eq!(B.used(), 0);
    assert!(!c.is_spilled());
    assert_eq!(read_all(&c), b"\r\n");
}

#[test]
fn an_exhausted_budget_spills_new_data() {
    static B: CaptureBudget = CaptureBudget::new(100);
    let mut first = MessageCapture::new(CaptureOptions::default().budget(&B));
    first.body(&[1; 80]).unwrap();
    assert!(!first.is_spilled());
    let mut second = MessageCapture::new(CaptureOptions::default().budget(&B));
    second.body(&[2; 30]).unwrap();
    assert!(second.is_spilled());
    assert_eq!(B.used(), 80);
    drop(first);
    assert_eq!(B.used(), 0);
    let mut third = MessageCapture::new(CaptureOptions::default().budget(&B));
    third.body(&[3; 30]).unwrap();
    assert!(!third.is_spilled());
    let mut all = read_all(&second);
    all.drain(..2);
    assert_eq!(all, [2; 30]);
}

#[test]
fn discard_mode_keeps_headers_only() {
    static B: CaptureBudget = CaptureBudget::new(1 << 20);
    let mut c = MessageCapture::new(CaptureOptions::default().budget(&B).body(BodyMode::Discard));
    c.record_header(&h("A", " b"), true).unwrap();
    c.body(&[0; 5000]).unwrap();
    assert_eq!(c.body_len(), 5000);
    assert!(!c.is_spilled());
    assert_eq!(read_all(&c), b"A: b\r\n\r\n");
    assert_eq!(B.used(), c.memory_used());
    assert!(c.memory_used() < 100);
}

#[test]
fn too_many_header_bytes_is_an_error_and_keeps_what_came_before() {
    let mut c = MessageCapture::new(CaptureOptions::default().max_header_bytes(20));
    c.record_header(&h("A", " 1234"), true).unwrap();
    let e = c.record_header(&h("B", " 0123456789"), true).unwrap_err();
    assert!(matches!(e, CaptureError::HeadersTooLarge { limit: 20 }));
    assert!(e.to_string().contains("20 bytes"), "{e}");
    assert_eq!(c.header_block(), b"A: 1234\r\n");
}

#[test]
fn an_unusable_spool_directory_is_a_spool_error() {
    let mut c = MessageCapture::new(
        CaptureOptions::default()
            .memory_per_message(0)
            .spool_dir("/nonexistent/capture/dir"),
    );
    let e = c.body(b"x").unwrap_err();
    assert!(matches!(e, CaptureError::Spool(_)), "{e}");
}

use super::*;
use std::io::Write;

fn scanner(join_lines: bool) -> Scanner {
    Scanner::new(ScanOptions {
        threads: 2,
        join_lines,
        ..ScanOptions::default()
    })
    .unwrap()
}

#[test]
fn archives_and_utf16() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::write(root.join("plain.log"), "x\ncard 4242424242424242\n").unwrap();
    // gz
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(b"a\nb\npan=5555555555554444\n").unwrap();
    std::fs::write(root.join("old.log.gz"), gz.finish().unwrap()).unwrap();
    // zip with a nested gz and a docx-like member
    let mut zw = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    zw.start_file("dir/a.csv", opts).unwrap();
    zw.write_all(b"id,card\n1,378282246310005\n").unwrap();
    let mut inner = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    inner
        .write_all(b"t=;4242424242424242=2512101123456?\n")
        .unwrap();
    zw.start_file("b.txt.gz", opts).unwrap();
    zw.write_all(&inner.finish().unwrap()).unwrap();
    std::fs::write(root.join("export.zip"), zw.finish().unwrap().into_inner()).unwrap();
    // UTF-16LE with BOM
    let mut u = vec![0xFF, 0xFE];
    for unit in "n\r\nk 6011111111111117\r\n".encode_utf16() {
        u.extend(unit.to_le_bytes());
    }
    std::fs::write(root.join("notes.txt"), u).unwrap();
    // excluded
    std::fs::create_dir(root.join("skip")).unwrap();
    std::fs::write(root.join("skip/x.log"), "4242424242424242\n").unwrap();

    let opts = ScanOptions {
        exclude: vec!["skip".into()],
        ..ScanOptions::default()
    };
    let report = Scanner::new(opts).unwrap().scan(&[root]).unwrap();
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    let got: Vec<(String, Option<String>, u64, u64, String, String)> = report
        .findings
        .iter()
        .map(|f| {
            let name = Path::new(&f.path)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            (
                name,
                f.member.clone(),
                f.line,
                f.offset,
                f.masked.clone(),
                f.kind.to_string(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (
                "export.zip".into(),
                Some("b.txt.gz!b.txt".into()),
                1,
                3,
                "424242******4242".into(),
                "track2".into()
            ),
            (
                "export.zip".into(),
                Some("dir/a.csv".into()),
                2,
                10,
                "378282*****0005".into(),
                "pan".into()
            ),
            (
                "notes.txt".into(),
                None,
                2,
                2 + 2 * 5,
                "601111******1117".into(),
                "pan".into()
            ),
            (
                "old.log.gz".into(),
                Some("old.log".into()),
                3,
                8,
                "555555******4444".into(),
                "pan".into()
            ),
            (
                "plain.log".into(),
                None,
                2,
                7,
                "424242******4242".into(),
                "pan".into()
            ),
        ]
    );
}

#[test]
fn member_cap_stops_zip_bombs() {
    let dir = tempfile::tempdir().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![b'0'; 1 << 20];
    for _ in 0..8 {
        gz.write_all(&zeros).unwrap();
    }
    gz.write_all(b"\n4242424242424242\n").unwrap();
    std::fs::write(dir.path().join("bomb.gz"), gz.finish().unwrap()).unwrap();
    let opts = ScanOptions {
        max_file_size: Some(1 << 20),
        ..ScanOptions::default()
    };
    let report = Scanner::new(opts).unwrap().scan(&[dir.path()]).unwrap();
    assert!(report.findings.is_empty());
    assert_eq!(report.warnings.len(), 1);
    assert!(report.warnings[0].message.contains("skipped"));
}

#[test]
fn split_files_match_whole_files() {
    // A file over SPLIT_MIN is cut into segments; results must equal a whole scan.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.log");
    let mut text = Vec::new();
    let mut k = 0u64;
    while text.len() <= (3 << 20) + 12345 {
        writeln!(
            text,
            "2024-06-15T12:00:00Z n={k} pan 4242 4242 4242 4242 ok"
        )
        .unwrap();
        writeln!(text, "{}", "y".repeat(usize::try_from(k % 2000).unwrap())).unwrap();
        k += 1;
    }
    std::fs::write(&path, &text).unwrap();
    let report = scanner(false)
        .with_split(1 << 20, 300_000)
        .scan(&[&path])
        .unwrap();
    let whole = super::super::scan_bytes(&text, false);
    assert_eq!(report.findings.len(), whole.len());
    for (f, m) in report.findings.iter().zip(&whole) {
        assert_eq!((f.offset, f.line, f.column), (m.offset, m.line, m.column));
    }
}

#[test]
fn missing_root_is_an_error_unreadable_file_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    assert!(scanner(false).scan(&[dir.path().join("nope")]).is_err());
}

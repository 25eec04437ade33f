use super::*;
use crate::compliance::checks;

#[test]
fn builtin_policies_load() {
    let pci = Policy::builtin("pci-dss-4.0.1").unwrap().unwrap();
    assert_eq!(pci.id, "pci-dss-4.0.1");
    assert!(pci.controls.len() >= 18, "{}", pci.controls.len());
    let gdpr = Policy::builtin("gdpr").unwrap().unwrap();
    assert!(
        gdpr.controls
            .iter()
            .any(|c| c.check == "gdpr.erasure_deadline")
    );
    assert!(Policy::builtin("sox").is_none());
}

#[test]
fn every_check_is_in_the_pci_policy_or_gdpr() {
    let pci = Policy::builtin("pci-dss-4.0.1").unwrap().unwrap();
    let gdpr = Policy::builtin("gdpr").unwrap().unwrap();
    for spec in checks::CHECKS {
        assert!(
            pci.controls
                .iter()
                .chain(&gdpr.controls)
                .any(|c| c.check == spec.name),
            "check {} is in no shipped policy",
            spec.name
        );
    }
}

const HEAD: &str = "[policy]\nid = \"p\"\ntitle = \"t\"\n";

fn err(text: &str) -> PolicyError {
    Policy::parse(text, "p.toml").unwrap_err()
}

#[test]
fn params_override_defaults() {
    let p = Policy::parse(
            &format!(
                "{HEAD}[[controls]]\nid = \"keys.cryptoperiod\"\nrequirements = [\"3.7.4\"]\nseverity = \"high\"\n[controls.params]\nmax_key_age_days = 90\n"
            ),
            "p.toml",
        )
        .unwrap();
    let c = &p.controls[0];
    assert_eq!(c.params.int("max_key_age_days"), 90);
    assert_eq!(c.params.int("max_root_age_days"), 365);
    assert_eq!(c.line, 4);
    assert_eq!(c.title, checks::spec("keys.cryptoperiod").unwrap().title);
}

#[test]
fn octal_modes_are_accepted() {
    let p = Policy::parse(
            &format!("{HEAD}[[controls]]\nid = \"access.file_modes\"\nrequirements = [\"7.2.1\"]\nseverity = \"high\"\nparams = {{ max_dir_mode = 0o750 }}\n"),
            "p.toml",
        )
        .unwrap();
    assert_eq!(p.controls[0].params.int("max_dir_mode"), 0o750);
}

#[test]
fn errors_have_file_and_line() {
    let e = err(&format!(
        "{HEAD}[[controls]]\nid = \"keys.cryptoperiod\"\nrequirements = [\"3.7.4\"]\nseverity = \"high\"\ncolour = 1\n[controls.params]\nmax_key_age_days = \"a year\"\nmax_age = 3\n"
    ));
    let s = e.to_string();
    assert!(s.contains("p.toml:8:1: unknown key `colour`"), "{s}");
    assert!(
        s.contains("p.toml:10:20: `max_key_age_days` must be an integer"),
        "{s}"
    );
    assert!(
        s.contains("p.toml:11:1: unknown parameter `max_age`"),
        "{s}"
    );
    assert_eq!(e.problems.len(), 3, "{s}");
}

#[test]
fn bad_values_are_named() {
    let e = err(&format!(
        "{HEAD}[[controls]]\nid = \"tls.configuration\"\nrequirements = []\nseverity = \"urgent\"\nparams = {{ min_tls = \"1.0\" }}\n"
    ));
    let s = e.to_string();
    assert!(s.contains("p.toml:6:16: `requirements` is empty"), "{s}");
    assert!(s.contains("p.toml:7:12: unknown severity `urgent`"), "{s}");
    assert!(
        s.contains("p.toml:8:22: `min_tls` = \"1.0\" is not one of \"1.2\", \"1.3\""),
        "{s}"
    );
    let e = err(&format!(
        "{HEAD}[[controls]]\nid = \"nope\"\nrequirements = [\"1\"]\nseverity = \"low\"\n"
    ));
    assert!(
        e.to_string().contains("p.toml:5:6: unknown check `nope`"),
        "{e}"
    );
    let e = err(&format!(
        "{HEAD}[[controls]]\nid = \"keys.cryptoperiod\"\nseverity = \"low\"\nparams = {{ max_key_age_days = 0 }}\n"
    ));
    let s = e.to_string();
    assert!(s.contains("needs `requirements`"), "{s}");
    assert!(
        s.contains("p.toml:7:31: `max_key_age_days` = 0 is out of range"),
        "{s}"
    );
}

#[test]
fn syntax_errors_and_structure() {
    let e = err("[policy\nid = 1");
    assert_eq!(e.problems[0].line, 1, "{e}");
    assert!(e.to_string().starts_with("p.toml:1:"), "{e}");
    let e = err("title = \"x\"\n");
    let s = e.to_string();
    assert!(
        s.contains("unknown key `title`")
            && s.contains("missing [policy]")
            && s.contains("no [[controls]]"),
        "{s}"
    );
    let e = err(&format!(
        "{HEAD}[[controls]]\nid = \"keys.cryptoperiod\"\nrequirements = [\"1\"]\nseverity = \"low\"\n[[controls]]\nid = \"keys.cryptoperiod\"\nrequirements = [\"1\"]\nseverity = \"low\"\n"
    ));
    assert!(
        e.to_string().contains("p.toml:9:6: duplicate control id"),
        "{e}"
    );
}

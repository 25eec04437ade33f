use super::*;

#[test]
fn actions_validate() {
    assert!(ActionName::new("key.rotate").is_ok());
    assert!(ActionName::new("").is_err());
    assert!(ActionName::new("Key").is_err());
    assert!(ActionName::new("a b").is_err());
    assert!(ActionName::new("x".repeat(65)).is_err());
}

#[test]
fn every_action_has_one_valid_name() {
    let mut names = std::collections::HashSet::new();
    for a in Action::ALL {
        assert!(ActionName::new(a.as_str()).is_ok(), "{a}");
        assert!(names.insert(a.as_str()), "{a} named twice");
        assert_eq!(Action::from_name(a.as_str()), Some(a));
        assert_eq!(ActionName::from(a).action(), Some(a));
    }
    // Only the API's card operations must name a resource.
    let on_cards: Vec<_> = Action::ALL
        .into_iter()
        .filter(|a| a.resource() != Resource::None)
        .map(Action::as_str)
        .collect();
    assert_eq!(
        on_cards,
        [
            "tokenize",
            "token.read",
            "detokenize",
            "token.delete",
            "erase",
            "relay",
            "relay.result"
        ]
    );
    assert_eq!(Action::from_name("master_key.unseal"), None);
}

#[test]
fn outcome_round_trips_through_its_columns() {
    for o in [
        Outcome::Success,
        Outcome::Denied("forbidden".into()),
        Outcome::Error("e".into()),
    ] {
        let back = Outcome::from_stored(o.kind_str(), o.code().map(str::to_owned));
        assert_eq!(back, Some(o));
    }
    assert_eq!(Outcome::from_stored("success", Some("x".into())), None);
    assert_eq!(Outcome::from_stored("denied", None), None);
}

#[test]
fn validate_refuses_long_fields() {
    let ev = NewEvent::new(
        OffsetDateTime::UNIX_EPOCH,
        Actor::admin("root"),
        Action::Init,
        Outcome::Success,
    );
    assert!(ev.validate().is_ok());
    let long = ev.clone().with_purpose("p".repeat(MAX_FIELD_LEN + 1));
    assert!(matches!(
        long.validate(),
        Err(AuditError::InvalidEvent {
            field: "purpose",
            ..
        })
    ));
    let bad_code = NewEvent {
        outcome: Outcome::Denied("Not Allowed".into()),
        ..ev
    };
    assert!(bad_code.validate().is_err());
}

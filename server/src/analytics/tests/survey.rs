//! Survey tokens, answers (JSON and form) and the answer page.

use serde_json::json;

use crate::analytics::survey::*;

fn raw(v: serde_json::Value) -> RawAnswer {
    serde_json::from_value(v).unwrap()
}

#[test]
fn a_token_is_64_hex_digits_and_only_its_sha256_is_kept() {
    let (token, hash) = new_token();
    assert!(well_formed(&token), "{token}");
    assert_eq!(hash, token_hash(&token));
    assert_ne!(hash, token);
    assert_ne!(new_token().0, token, "two tokens are never the same");
    // The SHA-256 test vector of "abc" (FIPS 180-2).
    assert_eq!(
        token_hash("abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert!(!well_formed(&token[..63]));
    assert!(!well_formed(&token.to_uppercase()));
    assert!(!well_formed("../../etc/passwd"));
}

#[test]
fn an_answer_needs_a_score_from_0_to_10_and_says_what_is_wrong() {
    let ok = SurveyAnswer::parse(&raw(
        json!({"score": 3, "reason": "  too slow  ", "csat": 2}),
    ));
    assert_eq!(
        ok,
        Ok(SurveyAnswer {
            score: 3,
            reason: Some("too slow".into()),
            csat: Some(2),
        })
    );
    assert_eq!(
        SurveyAnswer::parse(&raw(json!({"score": 0})))
            .unwrap()
            .score,
        0
    );
    assert_eq!(
        SurveyAnswer::parse(&raw(json!({"score": 10, "reason": ""})))
            .unwrap()
            .reason,
        None
    );
    for (body, message) in [
        (
            json!({"score": 11}),
            "`score` must be an integer from 0 to 10, got 11",
        ),
        (
            json!({"score": -1}),
            "`score` must be an integer from 0 to 10, got -1",
        ),
        (
            json!({"score": 3.5}),
            "`score` must be an integer from 0 to 10, got 3.5",
        ),
        (
            json!({"score": "ten"}),
            "`score` must be an integer from 0 to 10, got “ten”",
        ),
        (
            json!({"score": true}),
            "`score` must be an integer from 0 to 10, got true",
        ),
        (json!({}), "`score` is required: an integer from 0 to 10"),
        (
            json!({"score": 5, "csat": 0}),
            "`csat` must be an integer from 1 to 5, got 0",
        ),
        (
            json!({"score": 5, "csat": 6}),
            "`csat` must be an integer from 1 to 5, got 6",
        ),
    ] {
        assert_eq!(
            SurveyAnswer::parse(&raw(body.clone())),
            Err(InvalidAnswer(message.into())),
            "{body}"
        );
    }
    let long = "x".repeat(MAX_REASON_CHARS + 1);
    assert_eq!(
        SurveyAnswer::parse(&raw(json!({"score": 5, "reason": long}))),
        Err(InvalidAnswer(
            "`reason` has 2001 characters; at most 2000".into()
        ))
    );
}

#[test]
fn unknown_json_fields_are_refused() {
    assert!(serde_json::from_value::<RawAnswer>(json!({"score": 5, "nps": 5})).is_err());
}

#[test]
fn a_form_post_is_decoded_like_a_browser_sends_it() {
    // reason = "Zu spät & teuer!" ; csat left empty
    let answer = SurveyAnswer::from_form("score=4&reason=Zu+sp%C3%A4t+%26+teuer%21&csat=")
        .unwrap()
        .unwrap();
    assert_eq!(
        answer,
        SurveyAnswer {
            score: 4,
            reason: Some("Zu spät & teuer!".into()),
            csat: None,
        }
    );
    assert_eq!(
        SurveyAnswer::from_form("score=12").unwrap(),
        Err(InvalidAnswer(
            "`score` must be an integer from 0 to 10, got 12".into()
        ))
    );
    assert_eq!(
        SurveyAnswer::from_form("score=4&admin=1").unwrap_err(),
        "unknown form field `admin`"
    );
    assert!(SurveyAnswer::from_form("score=%G1").is_err());
}

#[test]
fn the_answer_page_escapes_every_text_and_needs_no_script() {
    let page = answer_page(
        &"a".repeat(64),
        &SurveyContext {
            customer_name: "<script>alert(1)</script> & Co".into(),
            machine: "m-1\"".into(),
            site_name: "Plant 'A'".into(),
            visit_date: "2026-01-05".into(),
        },
    );
    assert!(
        page.contains("&lt;script&gt;alert(1)&lt;/script&gt; &amp; Co"),
        "{page}"
    );
    assert!(page.contains("m-1&quot;") && page.contains("Plant &#39;A&#39;"));
    assert!(!page.contains("<script"));
    assert!(page.contains(&format!("action=\"/api/v1/surveys/{}\"", "a".repeat(64))));
    // Eleven score buttons, five satisfaction buttons.
    assert_eq!(page.matches("name=\"score\"").count(), 11);
    assert_eq!(page.matches("name=\"csat\"").count(), 5);
    assert!(page.contains("What is the main reason for your score?"));
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "no external resource"
    );
}

//! The NPS survey after each completed work order: its token, the validation of an
//! answer (JSON or an HTML form post) and the answer page (plain HTML, no script, no
//! CDN, every text escaped).
//!
//! The link is `{public_url}/survey/{token}`: the token is 32 bytes (64 hex digits)
//! drawn from the OS's random generator, and only its SHA-256 is stored, so a copy of
//! the database cannot answer surveys. One answer per survey: `score` 0–10 (the NPS
//! question), an optional free-text `reason` ("what is the main reason for your
//! score?") and an optional `csat` 1–5 (how satisfied with this visit).

use serde::Deserialize;
use sha2::{Digest, Sha256};

/// Longest accepted `reason`, in characters.
pub const MAX_REASON_CHARS: usize = 2000;

/// A fresh token and the SHA-256 (hex) to store.
pub fn new_token() -> (String, String) {
    // Three v4 UUIDs carry 366 bits from the OS generator; SHA-256 folds them into
    // 32 uniformly distributed bytes.
    let mut seed = Sha256::new();
    for _ in 0..3 {
        seed.update(uuid::Uuid::new_v4().as_bytes());
    }
    let token = hex::encode(seed.finalize());
    let hash = token_hash(&token);
    (token, hash)
}

/// SHA-256 (hex) of a token, as stored.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Whether `token` looks like one we issue (64 lowercase hex digits).
pub fn well_formed(token: &str) -> bool {
    token.len() == 64
        && token
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A validated answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SurveyAnswer {
    pub score: u8,
    pub reason: Option<String>,
    pub csat: Option<u8>,
}

/// An answer as posted in JSON; numbers are checked by [`SurveyAnswer::parse`] so a
/// wrong one gets a message that names it.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAnswer {
    pub score: Option<serde_json::Value>,
    pub reason: Option<String>,
    pub csat: Option<serde_json::Value>,
}

/// A field that is not what it must be (the caller answers 422).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidAnswer(pub String);

fn integer(
    name: &str,
    value: Option<&serde_json::Value>,
    range: std::ops::RangeInclusive<u8>,
) -> Result<Option<u8>, InvalidAnswer> {
    let wanted = format!("an integer from {} to {}", range.start(), range.end());
    let bad = |shown: String| InvalidAnswer(format!("`{name}` must be {wanted}, got {shown}"));
    let n = match value {
        None | Some(serde_json::Value::Null) => return Ok(None),
        Some(serde_json::Value::Number(n)) => n.as_i64().ok_or_else(|| bad(n.to_string()))?,
        Some(serde_json::Value::String(s)) if s.trim().is_empty() => return Ok(None),
        Some(serde_json::Value::String(s)) => s
            .trim()
            .parse::<i64>()
            .map_err(|_| bad(format!("“{}”", s.chars().take(20).collect::<String>())))?,
        Some(other) => return Err(bad(other.to_string())),
    };
    u8::try_from(n)
        .ok()
        .filter(|v| range.contains(v))
        .map(Some)
        .ok_or_else(|| bad(n.to_string()))
}

impl SurveyAnswer {
    pub fn parse(raw: &RawAnswer) -> Result<Self, InvalidAnswer> {
        let score = integer("score", raw.score.as_ref(), 0..=10)?
            .ok_or_else(|| InvalidAnswer("`score` is required: an integer from 0 to 10".into()))?;
        let csat = integer("csat", raw.csat.as_ref(), 1..=5)?;
        let reason = raw
            .reason
            .as_deref()
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .map(str::to_string);
        if let Some(r) = &reason {
            let chars = r.chars().count();
            if chars > MAX_REASON_CHARS {
                return Err(InvalidAnswer(format!(
                    "`reason` has {chars} characters; at most {MAX_REASON_CHARS}"
                )));
            }
            if r.chars()
                .any(|c| c.is_control() && c != '\n' && c != '\r' && c != '\t')
            {
                return Err(InvalidAnswer("`reason` contains control characters".into()));
            }
        }
        Ok(Self {
            score,
            reason,
            csat,
        })
    }

    /// An answer from an HTML form post (`application/x-www-form-urlencoded`).
    /// Unknown fields and undecodable bodies are the caller's malformed request (`Err`
    /// of the outer result); wrong values are [`InvalidAnswer`]s.
    pub fn from_form(body: &str) -> Result<Result<Self, InvalidAnswer>, String> {
        let mut raw = RawAnswer::default();
        for (key, value) in parse_form(body)? {
            let value = serde_json::Value::String(value);
            match key.as_str() {
                "score" => raw.score = Some(value),
                "csat" => raw.csat = Some(value),
                "reason" => raw.reason = value.as_str().map(str::to_string),
                other => return Err(format!("unknown form field `{other}`")),
            }
        }
        Ok(Self::parse(&raw))
    }
}

/// Decodes `a=1&b=x+y%21` into pairs.
pub fn parse_form(body: &str) -> Result<Vec<(String, String)>, String> {
    body.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((percent_decode(k)?, percent_decode(v)?))
        })
        .collect()
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("bad percent-escape in form field `{s}`"))?;
                out.push(hex);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| "a form field is not UTF-8".to_string())
}

/// `s` safe inside HTML text and attribute values.
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// What the answer page says about the visit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SurveyContext {
    pub customer_name: String,
    pub machine: String,
    pub site_name: String,
    /// `YYYY-MM-DD`.
    pub visit_date: String,
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:40em;margin:2em auto;padding:0 1em;color:#222}\
fieldset{border:1px solid #ccc;margin:1em 0;padding:1em}\
.scale label{display:inline-block;margin:.2em .4em;text-align:center}\
textarea{width:100%;min-height:6em}button{font-size:1.1em;padding:.4em 1.2em}";

fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{}</title><style>{STYLE}</style></head><body>{body}</body></html>\n",
        escape_html(title)
    )
}

/// The one-question survey as a form that posts to the answer endpoint.
pub fn answer_page(token: &str, ctx: &SurveyContext) -> String {
    let scale = |name: &str, range: std::ops::RangeInclusive<u8>, required: bool| {
        range
            .map(|n| {
                format!(
                    "<label><input type=\"radio\" name=\"{name}\" value=\"{n}\"{}><br>{n}</label>",
                    if required { " required" } else { "" }
                )
            })
            .collect::<String>()
    };
    let body = format!(
        "<h1>How did we do?</h1>\
<p>Our technician serviced <strong>{machine}</strong> at {site} on {date}.</p>\
<form method=\"post\" action=\"/api/v1/surveys/{token}\">\
<fieldset class=\"scale\"><legend>How likely are you to recommend us to a colleague? \
(0 = not at all, 10 = extremely likely)</legend>{nps}</fieldset>\
<fieldset><legend><label for=\"reason\">What is the main reason for your score?</label></legend>\
<textarea id=\"reason\" name=\"reason\" maxlength=\"{max}\"></textarea></fieldset>\
<fieldset class=\"scale\"><legend>How satisfied are you with this visit? (optional; 1 = very \
unsatisfied, 5 = very satisfied)</legend>{csat}</fieldset>\
<button type=\"submit\">Send</button></form>\
<p><small>For {customer}. One answer per visit.</small></p>",
        machine = escape_html(&ctx.machine),
        site = escape_html(&ctx.site_name),
        date = escape_html(&ctx.visit_date),
        customer = escape_html(&ctx.customer_name),
        token = escape_html(token),
        nps = scale("score", 0..=10, true),
        csat = scale("csat", 1..=5, false),
        max = MAX_REASON_CHARS,
    );
    page("Your service visit", &body)
}

/// A page with a heading and one paragraph (thanks, already answered, expired, ...).
pub fn message_page(title: &str, text: &str) -> String {
    page(
        title,
        &format!(
            "<h1>{}</h1><p>{}</p>",
            escape_html(title),
            escape_html(text)
        ),
    )
}

//! `mfa-recall report`: every user a recall targeted and what became of them (invalidated,
//! excluded and by which rule, failed and why, re-enrolled when and with what, flagged,
//! quarantined), read from the recall's signed ledger one segment at a time, so a recall of any
//! size is reported in the memory of one segment. Rows go out as they are read; the counts they
//! add up to are returned for comparison with the recall's status.

use std::io::Write;

use serde::Serialize;

use crate::api::RecallCounts;
use crate::ledger::{LedgerStore, Quarantine, UserRecord, UserState, add_user};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Comma-separated, one header line; cells a spreadsheet would run as a formula are quoted
    /// with a leading apostrophe.
    Csv,
    /// One JSON object a line.
    Json,
}

/// How to write a report, the same for `mfa-recall report` and `kubectl mfa-recall report`.
#[derive(clap::Args, Debug, Clone)]
pub struct Options {
    /// The operator's ledger key (the `key` of its ledger Secret): a ledger object that does
    /// not verify under it stops the report.
    #[arg(long)]
    pub key_file: std::path::PathBuf,
    #[arg(long, value_enum, default_value = "csv")]
    pub format: Format,
    /// Write the rows here rather than to standard output.
    #[arg(long, short)]
    pub output: Option<std::path::PathBuf>,
    /// Only this backend.
    #[arg(long)]
    pub backend: Option<String>,
}

/// One user on one backend, as the report prints them.
#[derive(Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Row<'a> {
    pub backend: &'a str,
    pub user_id: &'a str,
    pub username: &'a str,
    pub state: &'static str,
    /// The exclusion rule, or the error that made the user fail.
    pub note: &'a str,
    /// Factors this recall deleted, as `kind:count` joined by spaces.
    pub factors_revoked: String,
    pub re_enrolled_at: Option<jiff::Timestamp>,
    pub re_enrolled_kind: Option<&'static str>,
    /// Where the enrollment came from, as the provider logged it (address, place, network, agent).
    pub re_enrolled_from: String,
    /// Held a factor from after the cutoff when the recall reached them: not asked to re-enroll.
    pub already_enrolled: bool,
    /// Expected to enroll again and has not yet.
    pub pending: bool,
    /// Anomaly rules that tripped in the re-enrollment window, joined by spaces.
    pub flags: String,
    /// `held`, `cleared by <person>`, or empty.
    pub quarantine: String,
    pub disabled: bool,
    /// Why the provider will not make the user enroll again (empty when it will).
    pub at_risk: &'a str,
    /// The user's MfaBypasses, each as `<phase> <name>` with when it was used or ends, joined by `; `.
    pub bypasses: &'a str,
}

impl<'a> Row<'a> {
    pub fn of(backend: &'a str, record: &'a UserRecord, bypasses: &'a str) -> Self {
        let mut revoked = std::collections::BTreeMap::<&str, u32>::new();
        for factor in record.lost() {
            *revoked.entry(factor.kind.as_str()).or_default() += 1;
        }
        Row {
            backend,
            user_id: &record.user.id,
            username: &record.user.username,
            state: match record.state {
                UserState::Planned => "planned",
                UserState::Invalidated => "invalidated",
                UserState::Excluded => "excluded",
                UserState::Failed => "failed",
                UserState::AwaitingLogs => "awaitingLogs",
            },
            note: record.note.as_deref().unwrap_or_default(),
            factors_revoked: revoked.iter().map(|(kind, n)| format!("{kind}:{n}")).collect::<Vec<_>>().join(" "),
            re_enrolled_at: record.re_enrolled.as_ref().map(|e| e.at),
            re_enrolled_kind: record.re_enrolled.as_ref().map(|e| e.kind.as_str()),
            re_enrolled_from: record.re_enrolled.as_ref().and_then(|e| e.origin.as_ref()).map(|o| o.to_string()).unwrap_or_default(),
            already_enrolled: record.state == UserState::Invalidated && record.re_enrolled.is_none() && record.already_enrolled(),
            pending: record.awaits_re_enrollment(),
            flags: record.flags.iter().map(|f| f.rule.as_str()).collect::<Vec<_>>().join(" "),
            quarantine: match &record.quarantine {
                Some(q) if q.holds() => "held".into(),
                Some(Quarantine { cleared_by: Some(by), .. }) => format!("cleared by {by}"),
                Some(_) => "cleared".into(),
                None => String::new(),
            },
            disabled: record.disabled,
            at_risk: record.snapshot.as_ref().and_then(|s| s.at_risk.as_deref()).filter(|_| record.state == UserState::Invalidated).unwrap_or_default(),
            bypasses,
        }
    }
}

/// What each user's MfaBypasses came to, by backend and user id: read once, joined to the rows.
pub type Bypasses = std::collections::HashMap<(String, String), String>;

/// The bypasses of `recall` among `listed`, as the report shows them.
pub fn bypasses_of(recall: &str, listed: &[crate::api::MfaBypass]) -> Bypasses {
    let mut by_user = Bypasses::new();
    for bypass in listed.iter().filter(|b| b.spec.recall == recall) {
        let Some(status) = &bypass.status else { continue };
        let Some(user_id) = &status.user_id else { continue };
        let name = bypass.metadata.name.as_deref().unwrap_or_default();
        let when = match (status.used_at, status.expires_at) {
            (Some(used), _) => format!(" at {used}"),
            (None, Some(ends)) => format!(" until {ends}"),
            _ => String::new(),
        };
        let text = format!("{:?} {name}{when}", status.phase);
        let entry = by_user.entry((bypass.spec.backend.clone(), user_id.clone())).or_default();
        if !entry.is_empty() {
            entry.push_str("; ");
        }
        entry.push_str(&text);
    }
    by_user
}

/// Writes rows in one format.
pub struct ReportWriter<W: Write> {
    format: Format,
    csv: Option<csv::Writer<W>>,
    json: Option<W>,
}

impl<W: Write> ReportWriter<W> {
    pub fn new(format: Format, out: W) -> Self {
        match format {
            Format::Csv => ReportWriter { format, csv: Some(csv::Writer::from_writer(out)), json: None },
            Format::Json => ReportWriter { format, csv: None, json: Some(out) },
        }
    }

    pub fn write(&mut self, row: &Row) -> std::io::Result<()> {
        match (self.format, self.csv.as_mut(), self.json.as_mut()) {
            (Format::Csv, Some(csv), _) => {
                let cells = [
                    row.backend.to_string(),
                    row.user_id.to_string(),
                    row.username.to_string(),
                    row.state.to_string(),
                    row.note.to_string(),
                    row.factors_revoked.clone(),
                    row.re_enrolled_at.map(|t| t.to_string()).unwrap_or_default(),
                    row.re_enrolled_kind.unwrap_or_default().to_string(),
                    row.re_enrolled_from.clone(),
                    row.already_enrolled.to_string(),
                    row.pending.to_string(),
                    row.flags.clone(),
                    row.quarantine.clone(),
                    row.disabled.to_string(),
                    row.at_risk.to_string(),
                    row.bypasses.to_string(),
                ];
                csv.write_record(cells.iter().map(|c| spreadsheet_safe(c).into_owned())).map_err(std::io::Error::other)
            }
            (_, _, Some(out)) => {
                serde_json::to_writer(&mut *out, row)?;
                out.write_all(b"\n")
            }
            _ => unreachable!("a writer holds the sink of its format"),
        }
    }

    pub fn header(&mut self) -> std::io::Result<()> {
        if let Some(csv) = self.csv.as_mut() {
            csv.write_record(CSV_HEADER).map_err(std::io::Error::other)?;
        }
        Ok(())
    }

    pub fn finish(mut self) -> std::io::Result<()> {
        if let Some(csv) = self.csv.as_mut() {
            csv.flush()?;
        }
        if let Some(out) = self.json.as_mut() {
            out.flush()?;
        }
        Ok(())
    }
}

const CSV_HEADER: [&str; 16] = ["backend", "userId", "username", "state", "note", "factorsRevoked", "reEnrolledAt", "reEnrolledKind", "reEnrolledFrom", "alreadyEnrolled", "pending", "flags", "quarantine", "disabled", "atRisk", "bypasses"];

/// A cell as text a spreadsheet shows rather than runs: usernames and notes come from providers
/// and tenants, and a leading `=`, `+`, `-`, `@`, tab or carriage return starts a formula
/// (OWASP, CSV injection).
fn spreadsheet_safe(cell: &str) -> std::borrow::Cow<'_, str> {
    match cell.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{cell}").into(),
        _ => cell.into(),
    }
}

/// Writes every user of `backend` in the ledger, segment by segment; the counts they add up to.
pub async fn report_backend<W: Write>(ledger: &dyn LedgerStore, backend: &str, bypasses: &Bypasses, out: &mut ReportWriter<W>) -> crate::Result<RecallCounts> {
    let mut counts = RecallCounts::default();
    for index in ledger.segments(backend).await? {
        let segment = ledger.read(backend, index).await?;
        for record in &segment.users {
            add_user(record, &mut counts);
            let bypass = bypasses.get(&(backend.to_string(), record.user.id.clone())).map(String::as_str).unwrap_or_default();
            out.write(&Row::of(backend, record, bypass)).map_err(|e| crate::Error::Invalid(format!("writing the report: {e}")))?;
        }
    }
    Ok(counts)
}

/// Where the counts the rows add up to differ from those the recall's status shows, one line
/// each; empty when they agree.
pub fn differences(from_ledger: &RecallCounts, in_status: &RecallCounts) -> Vec<String> {
    let (a, b) = (serde_json::to_value(from_ledger).unwrap_or_default(), serde_json::to_value(in_status).unwrap_or_default());
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else { return vec!["counts do not serialize".into()] };
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| format!("{k}: {} in the ledger, {} in status", a.get(k).cloned().unwrap_or_default(), b.get(k).cloned().unwrap_or_default()))
        .collect()
}

/// Writes the report of a recall; false when a recall that is over has counts in its status that
/// its ledger does not add up to (while it runs, status lags the ledger and that is only said).
pub async fn write(client: kube::Client, recall: &str, namespace: &str, options: &Options) -> Result<bool, Box<dyn std::error::Error>> {
    let (key_file, format, output, only) = (options.key_file.as_path(), options.format, options.output.as_deref(), options.backend.as_deref());
    use crate::api::RecallPhase;
    let key = crate::keys::HmacKey::from_file(key_file, crate::ledger::KEY_NAME)?;
    let object = kube::Api::<crate::api::MfaRecall>::namespaced(client.clone(), namespace).get(recall).await?;
    let owner = kube::Resource::controller_owner_ref(&object, &()).ok_or("the recall has no uid")?;
    // Someone who may read the ledger but not the bypasses still gets the rest of the report.
    let listed = match kube::Api::<crate::api::MfaBypass>::namespaced(client.clone(), namespace).list(&Default::default()).await {
        Ok(list) => list.items,
        Err(e) => {
            eprintln!("the bypasses column is empty: listing MfaBypasses in {namespace}: {e}");
            Vec::new()
        }
    };
    let bypasses = bypasses_of(recall, &listed);
    let ledger = crate::ledger::ResourceLedger::new(client, namespace, owner, key);
    let backends: Vec<&String> = object.spec.backends.iter().filter(|b| only.is_none_or(|o| o == b.as_str())).collect();
    if backends.is_empty() {
        return Err(format!("the recall has no backend {}; it has {}", only.unwrap_or_default(), object.spec.backends.join(", ")).into());
    }
    let sink: Box<dyn std::io::Write> = match output {
        Some(path) => Box::new(std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut out = ReportWriter::new(format, std::io::BufWriter::new(sink));
    out.header()?;
    let status = object.status.unwrap_or_default();
    let over = matches!(status.phase, RecallPhase::Completed | RecallPhase::Cancelled | RecallPhase::Failed);
    let mut agree = true;
    for backend in backends {
        let counts = report_backend(&ledger, backend, &bypasses, &mut out).await?;
        let shown = status.backends.iter().find(|b| &b.name == backend).map(|b| b.counts.clone()).unwrap_or_default();
        let differ = differences(&counts, &shown);
        if differ.is_empty() {
            eprintln!("{backend}: {} users; the rows add up to the counts in status", counts.targeted);
        } else {
            eprintln!("{backend}: {} users; the rows differ from status{}: {}", counts.targeted, if over { "" } else { " (the recall is still running: status follows its ledger)" }, differ.join("; "));
            agree &= !over;
        }
    }
    out.finish()?;
    Ok(agree)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backends::{Enrollment, FactorRef, UserRef, UserSnapshot};
    use crate::ledger::{MemoryLedger, Segment, Work};
    use crate::api::FactorKind;
    use crate::watch::{Flag, Rule};


    fn user(id: &str, name: &str) -> UserRef {
        UserRef { id: id.into(), username: name.into() }
    }

    fn invalidated(id: &str, name: &str, factors: &[(&str, FactorKind)]) -> UserRecord {
        let mut record = UserRecord::planned(user(id, name));
        record.state = UserState::Invalidated;
        let factors: Vec<FactorRef> = factors.iter().map(|(id, kind)| FactorRef::new(*id, *kind, kind.as_str())).collect();
        record.work = Some(Work { sessions_ended: true, revoked: factors.iter().map(|f| f.id.clone()).collect(), ..Default::default() });
        record.snapshot = Some(UserSnapshot { factors, sessions: 1, ..Default::default() });
        record
    }

    #[tokio::test]
    async fn every_user_is_a_row_and_the_rows_add_up_to_the_counts() {
        let ledger = MemoryLedger::default();
        let mut reenrolled = invalidated("00u1", "Ann.Lee@Example.com", &[("f1", FactorKind::Totp), ("f2", FactorKind::Webauthn), ("f3", FactorKind::Totp)]);
        let origin = crate::backends::EnrollmentOrigin { ip: Some("203.0.113.9".into()), ..Default::default() };
        reenrolled.re_enrolled = Some(Enrollment { kind: FactorKind::Push, at: "2026-12-06T08:00:00Z".parse().unwrap(), origin: Some(origin) });
        let mut flagged = invalidated("00u2", "=HYPERLINK(\"http://x\")", &[("f4", FactorKind::Sms)]);
        flagged.flags.push(Flag { rule: Rule::NewNetwork, event_id: "e1".into(), at: jiff::Timestamp::now() });
        flagged.quarantine = Some(Quarantine { at: jiff::Timestamp::now(), rules: vec![Rule::NewNetwork], factors_revoked: 1, incomplete: vec![], cleared_by: None, cleared_at: None });
        let mut excluded = UserRecord::planned(user("00u3", "break-glass"));
        excluded.state = UserState::Excluded;
        excluded.note = Some("excluded group Admins".into());
        let mut failed = UserRecord::planned(user("00u4", "bob, \"the\" builder"));
        failed.state = UserState::Failed;
        failed.note = Some("factors: 500 from the provider".into());
        ledger.write(&Segment::fresh("okta", 0, Some("next".into()), vec![reenrolled, flagged])).await.unwrap();
        ledger.write(&Segment::fresh("okta", 1, None, vec![excluded, failed])).await.unwrap();

        let bypass: crate::api::MfaBypass = serde_json::from_value(serde_json::json!({
            "apiVersion": "mfarecall.io/v1alpha1", "kind": "MfaBypass", "metadata": { "name": "ann-1" },
            "spec": { "recall": "inc-1", "backend": "okta", "user": "ann.lee@example.com", "reason": "verified", "requestedBy": "alice", "approvedBy": "bob" },
            "status": { "phase": "Used", "userId": "00u1", "usedAt": "2026-12-06T07:30:00Z" }
        }))
        .unwrap();
        let other_recall = crate::api::MfaBypass { spec: crate::api::MfaBypassSpec { recall: "inc-2".into(), ..bypass.spec.clone() }, ..bypass.clone() };
        let bypasses = bypasses_of("inc-1", &[bypass, other_recall]);
        let mut json = ReportWriter::new(Format::Json, Vec::new());
        let counts = report_backend(&ledger, "okta", &bypasses, &mut json).await.unwrap();
        let lines: Vec<serde_json::Value> = String::from_utf8(json.json.take().unwrap()).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 4);
        assert_eq!((lines[0]["username"].as_str(), lines[0]["factorsRevoked"].as_str(), lines[0]["reEnrolledKind"].as_str(), lines[0]["pending"].as_bool()), (Some("Ann.Lee@Example.com"), Some("totp:2 webauthn:1"), Some("push"), Some(false)));
        assert_eq!((lines[0]["reEnrolledFrom"].as_str(), lines[0]["bypasses"].as_str()), (Some("ip 203.0.113.9"), Some("Used ann-1 at 2026-12-06T07:30:00Z")), "another recall's bypass is not this one's");
        assert_eq!((lines[1]["flags"].as_str(), lines[1]["quarantine"].as_str(), lines[1]["bypasses"].as_str()), (Some("newNetwork"), Some("held"), Some("")));
        assert_eq!((lines[2]["state"].as_str(), lines[2]["note"].as_str()), (Some("excluded"), Some("excluded group Admins")));
        assert_eq!(lines[3]["state"], "failed");
        let mut expected = RecallCounts::default();
        for segment in [ledger.read("okta", 0).await.unwrap(), ledger.read("okta", 1).await.unwrap()] {
            segment.add_counts(&mut expected);
        }
        assert_eq!(counts, expected);
        assert_eq!((counts.targeted, counts.invalidated, counts.excluded, counts.failed, counts.re_enrolled, counts.quarantined), (4, 2, 1, 1, 1, 1));
        assert!(differences(&counts, &expected).is_empty());
        let mut off = expected.clone();
        off.invalidated += 1;
        assert_eq!(differences(&counts, &off), ["invalidated: 2 in the ledger, 3 in status"]);

        let mut csv = ReportWriter::new(Format::Csv, Vec::new());
        csv.header().unwrap();
        report_backend(&ledger, "okta", &bypasses, &mut csv).await.unwrap();
        let text = String::from_utf8(csv.csv.take().unwrap().into_inner().unwrap()).unwrap();
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
        assert_eq!(reader.headers().unwrap().iter().collect::<Vec<_>>(), CSV_HEADER);
        assert_eq!(&rows[1][2], "'=HYPERLINK(\"http://x\")", "a formula is shown, not run");
        assert_eq!(&rows[3][2], "bob, \"the\" builder", "commas and quotes survive");
    }
}

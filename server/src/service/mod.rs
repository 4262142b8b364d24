//! Field-service scheduling, pure: who can do a job, when, and how long parts take.
//!
//! - [`assign`]: the technician and slot for a job inside a planned stop: qualified for
//!   the machine model, not absent, never double-booked, with travel between sites
//!   allowed for (same region vs. another region).
//! - [`effective_lead_time_days`]: a part on the depot's shelf ships in the dispatch
//!   time; one that is not takes its catalogue lead time.
//! - [`cap_contacts`]: at most N customer contacts per rolling week.

use std::collections::HashSet;

use serde::Serialize;
use wearcast_protocol::UnixMs;

use crate::planner::Decision;
use crate::planner::calendar::Occurrence;

/// How long a technician needs to get from one place to another.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TravelModel {
    pub same_region_h: f64,
    pub other_region_h: f64,
}

impl Default for TravelModel {
    fn default() -> Self {
        Self {
            same_region_h: 1.0,
            other_region_h: 8.0,
        }
    }
}

impl TravelModel {
    pub fn hours(&self, from: &str, to: &str) -> f64 {
        if from == to {
            self.same_region_h
        } else {
            self.other_region_h
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct TechnicianProfile {
    pub id: String,
    pub home_region: String,
    /// Machine model ids the technician is qualified for.
    pub skills: HashSet<String>,
}

/// Time a technician is not available: a job at a site (with its region, so travel to
/// and from it counts) or an absence (no region).
#[derive(Clone, Debug, PartialEq)]
pub struct Busy {
    pub technician: String,
    pub start: UnixMs,
    pub end: UnixMs,
    pub region: Option<String>,
}

/// A job to place: replacing parts on one machine during one planned stop.
#[derive(Clone, Debug, PartialEq)]
pub struct Job {
    pub machine_model: String,
    pub region: String,
    pub window: Occurrence,
    pub work_hours: f64,
}

/// Where a job landed.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Assignment {
    pub technician: String,
    /// On-site work, inside the planned stop.
    pub start: UnixMs,
    pub end: UnixMs,
    /// Travel to the site from where the technician was before.
    pub travel_minutes: i64,
}

/// Why a job could not be placed, for a clear answer to the dispatcher.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NoAssignment {
    NobodyQualified,
    NobodyFree,
}

/// Finds the qualified technician who can do the job earliest within its window.
/// Deterministic: ties go to a technician based in the job's region, then by id.
pub fn assign(
    job: &Job,
    technicians: &[TechnicianProfile],
    busy: &[Busy],
    travel: &TravelModel,
) -> Result<Assignment, NoAssignment> {
    let mut qualified: Vec<&TechnicianProfile> = technicians
        .iter()
        .filter(|t| t.skills.contains(&job.machine_model))
        .collect();
    if qualified.is_empty() {
        return Err(NoAssignment::NobodyQualified);
    }
    qualified.sort_by(|a, b| {
        (a.home_region != job.region, &a.id).cmp(&(b.home_region != job.region, &b.id))
    });
    let mut best: Option<Assignment> = None;
    for tech in qualified {
        if let Some(a) = earliest_slot(job, tech, busy, travel)
            && best.as_ref().is_none_or(|b| a.start < b.start)
        {
            best = Some(a);
        }
    }
    best.ok_or(NoAssignment::NobodyFree)
}

/// Checks that `technician` may do `job` in `[start, start + work)` given `busy`.
pub fn fits(
    job: &Job,
    technician: &TechnicianProfile,
    start: UnixMs,
    busy: &[Busy],
    travel: &TravelModel,
) -> bool {
    let end = start.plus_hours(job.work_hours);
    if start < job.window.start || end > job.window.end {
        return false;
    }
    busy.iter()
        .filter(|b| b.technician == technician.id)
        .all(|b| {
            let (before, after) = match &b.region {
                Some(r) => (travel.hours(r, &job.region), travel.hours(&job.region, r)),
                None => (0.0, 0.0),
            };
            b.end.plus_hours(before) <= start || end.plus_hours(after) <= b.start
        })
}

fn earliest_slot(
    job: &Job,
    tech: &TechnicianProfile,
    busy: &[Busy],
    travel: &TravelModel,
) -> Option<Assignment> {
    // Candidate starts: the window's start, and right after each of the technician's
    // commitments (plus the travel from there).
    let mut candidates = vec![job.window.start];
    for b in busy.iter().filter(|b| b.technician == tech.id) {
        let travel_h = b
            .region
            .as_ref()
            .map_or(0.0, |r| travel.hours(r, &job.region));
        candidates.push(b.end.plus_hours(travel_h));
    }
    candidates.sort();
    let start = candidates
        .into_iter()
        .filter(|s| *s >= job.window.start)
        .find(|s| fits(job, tech, *s, busy, travel))?;
    let came_from = busy
        .iter()
        .filter(|b| b.technician == tech.id && b.end <= start)
        .max_by_key(|b| b.end)
        .and_then(|b| b.region.clone())
        .unwrap_or_else(|| tech.home_region.clone());
    Some(Assignment {
        technician: tech.id.clone(),
        start,
        end: start.plus_hours(job.work_hours),
        travel_minutes: (travel.hours(&came_from, &job.region) * 60.0).round() as i64,
    })
}

/// Days until a part can be on site.
pub fn effective_lead_time_days(
    stock: i64,
    reserved: i64,
    lead_time_days: f64,
    dispatch_days: f64,
) -> f64 {
    if stock - reserved > 0 {
        dispatch_days.min(lead_time_days)
    } else {
        lead_time_days
    }
}

/// Keeps the decisions that contact the customer within `remaining` contacts, most
/// urgent first (urgent visits are never held back: safety before courtesy, but they
/// count); expiries never contact anyone and always pass. Returns the kept decisions
/// and how many contacts were held back.
pub fn cap_contacts(decisions: Vec<Decision>, remaining: &mut u32) -> (Vec<Decision>, u32) {
    let mut contacts: Vec<Decision> = Vec::new();
    let mut kept: Vec<Decision> = Vec::new();
    for d in decisions {
        match &d {
            Decision::Expire { .. } => kept.push(d),
            _ => contacts.push(d),
        }
    }
    let draft = |d: &Decision| match d {
        Decision::Propose(x) | Decision::Supersede { draft: x, .. } => Some(x.clone()),
        Decision::Expire { .. } => None,
    };
    contacts.sort_by(|a, b| {
        let (a, b) = (draft(a), draft(b));
        let key = |d: &Option<crate::planner::OfferDraft>| {
            d.as_ref().map(|d| (!d.urgent, d.window.start))
        };
        key(&a).cmp(&key(&b))
    });
    let mut held = 0;
    for d in contacts {
        let urgent = draft(&d).is_some_and(|x| x.urgent);
        if urgent || *remaining > 0 {
            *remaining = remaining.saturating_sub(1);
            kept.push(d);
        } else {
            held += 1;
        }
    }
    (kept, held)
}

#[cfg(test)]
mod tests;

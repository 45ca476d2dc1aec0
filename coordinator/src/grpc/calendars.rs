//! Business calendars over ControlService: the list, and one calendar's year.

use chrono::Datelike;
use goflow_core::Calendar;
use goflow_proto as pb;
use tonic::Status;

use crate::engine::Catalog;

fn calendar_pb(catalog: &Catalog, calendar: &Calendar) -> pb::Calendar {
    let raw = calendar.to_raw();
    pb::Calendar {
        id: raw.id,
        weekdays: raw.weekdays,
        exclude: raw.exclude.iter().map(|d| d.compact()).collect(),
        include: raw.include.iter().map(|d| d.compact()).collect(),
        description: raw.description,
        tasks: catalog
            .dag
            .tasks()
            .filter(|t| t.calendar.as_deref() == Some(calendar.id.as_str()))
            .map(|t| t.id.clone())
            .collect(),
    }
}

pub(super) fn list(catalog: &Catalog) -> pb::ListCalendarsResponse {
    pb::ListCalendarsResponse {
        calendars: catalog.dag.calendars().map(|c| calendar_pb(catalog, c)).collect(),
    }
}

pub(super) fn get(catalog: &Catalog, request: &pb::GetCalendarRequest) -> Result<pb::CalendarDetail, Status> {
    let calendar = catalog
        .dag
        .calendar(&request.id)
        .ok_or_else(|| Status::not_found(format!("unknown calendar {:?}", request.id)))?;
    let year = if request.year == 0 {
        chrono::Utc::now().year()
    } else {
        request.year
    };
    if !(1000..=9999).contains(&year) {
        return Err(Status::invalid_argument(format!(
            "year {year} is out of range (1000..=9999)"
        )));
    }
    Ok(pb::CalendarDetail {
        calendar: Some(calendar_pb(catalog, calendar)),
        year,
        days: calendar
            .year(year)
            .into_iter()
            .map(|(day, verdict)| pb::CalendarDay {
                day: day.compact(),
                in_calendar: verdict.is_in(),
                why: verdict.as_str().to_string(),
            })
            .collect(),
    })
}

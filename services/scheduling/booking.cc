// Slots, booking with the KAP rules, appointment lifecycle, integration-due and the waitlist.
#include <algorithm>
#include <set>

#include "absl/strings/str_cat.h"
#include "common/api/api.h"
#include "common/status/errors.h"
#include "common/status/macros.h"
#include "services/scheduling/rules.h"
#include "services/scheduling/scheduler.h"
#include "services/scheduling/scheduler_templates.h"
#include "services/scheduling/time_math.h"

namespace continuum::scheduling {
namespace {

using State = v1::Appointment::State;

absl::Status NotFound(const std::string& name) {
  return MakeError(absl::StatusCode::kNotFound, "NOT_FOUND", absl::StrCat(name, " does not exist"),
                   {{"resource", name}});
}

absl::Status Rule(absl::string_view reason, absl::string_view message,
                  const std::map<std::string, std::string>& metadata = {}) {
  return MakeError(absl::StatusCode::kFailedPrecondition, reason, message, metadata);
}

std::string Fmt(absl::Time t, absl::TimeZone tz) { return absl::FormatTime("%Y-%m-%d %H:%M %Z", t, tz); }

std::vector<TimeRange> ToRanges(const std::vector<std::pair<absl::Time, absl::Time>>& busy) {
  std::vector<TimeRange> out;
  for (const auto& [s, e] : busy) out.push_back({s, e});
  return out;
}

std::vector<std::string> MedicineRooms(const v1::Clinic& clinic) {
  std::vector<std::string> rooms;
  for (const auto& r : clinic.rooms()) {
    if (r.supports_medicine_sessions()) rooms.push_back(r.room_id());
  }
  std::sort(rooms.begin(), rooms.end());
  return rooms;
}

bool NeedsRoom(cv1::AppointmentKind kind, cv1::CareSetting setting) {
  return kind == cv1::APPOINTMENT_KIND_MEDICINE_SUPERVISED && setting == cv1::CARE_SETTING_IN_CLINIC;
}

// The occupancy an appointment claims (see Appointment in the proto): its client for the
// appointment itself, its provider and room for the buffered interval.
std::vector<Claim> ClaimsOf(const v1::Appointment& a, const TimeRange& occupied) {
  std::vector<Claim> claims = {{"client:" + IdOfName(a.client()), FromProto(a.start_time()), FromProto(a.end_time())}};
  if (OccupiesProvider(a.kind())) claims.push_back({"provider:" + IdOfName(a.provider()), occupied.start, occupied.end});
  if (!a.room().empty()) claims.push_back({"room:" + a.room(), occupied.start, occupied.end});
  return claims;
}

// For an in-clinic medicine session without a room: `preferred` if it is still free, else
// the free medicine room with the lowest id; SLOT_CONFLICT when none is free.
absl::Status AssignRoom(SchedulingStore& s, const std::string& clinic_id, const v1::Clinic& clinic,
                        const TimeRange& occupied, const std::string& preferred, v1::Appointment& a) {
  if (!NeedsRoom(a.kind(), a.setting()) || !a.room().empty()) return absl::OkStatus();
  std::vector<std::string> rooms = MedicineRooms(clinic);
  if (std::find(rooms.begin(), rooms.end(), preferred) != rooms.end()) rooms.insert(rooms.begin(), preferred);
  for (const auto& room : rooms) {
    ASSIGN_OR_RETURN(auto busy, s.Busy(clinic_id, "room:" + room, occupied.start, occupied.end));
    if (!OverlapsAny(ToRanges(busy), occupied)) {
      a.set_room(room);
      return absl::OkStatus();
    }
  }
  return MakeError(absl::StatusCode::kAborted, "SLOT_CONFLICT", "no medicine room is free at that time",
                   {{"conflict", "room"}});
}

// A medicine session without its integration session, as listed and published.
v1::IntegrationDue DueOf(const v1::Appointment& m, const v1::Clinic& clinic, absl::Time now) {
  v1::IntegrationDue d;
  d.set_medicine_appointment(m.name());
  d.set_client(m.client());
  d.set_program(m.program());
  *d.mutable_medicine_end_time() = m.end_time();
  *d.mutable_due_time() = ToProto(FromProto(m.end_time()) + FromProto(clinic.policy().integration_window()));
  d.set_overdue(now > FromProto(d.due_time()));
  return d;
}

}  // namespace

// Everything the booking checks need about one appointment being booked or moved.
struct Scheduler::BookingContext {
  v1::Clinic clinic;
  absl::TimeZone tz;
  std::string clinic_id;
  v1::Program program;
  v1::Appointment appointment;  // the proposed new state
  const auth::Principal* caller = nullptr;
  bool check_notice = true;
};

absl::Status Scheduler::PublishAppointmentEvent(SchedulingStore& s, const std::string& clinic_id,
                                                events::v1::EventEnvelope event) {
  return s.Publish(event, clock_.Now());
}

// The checks of BookAppointment, in the documented order, after shape and permission.
absl::Status Scheduler::CheckBooking(SchedulingStore& s, BookingContext& c, const std::string& ignore) {
  v1::Appointment& a = c.appointment;
  const auto& policy = c.clinic.policy();
  absl::Time now = clock_.Now();
  absl::Time start = FromProto(a.start_time()), end = FromProto(a.end_time());
  cv1::AppointmentKind kind = a.kind();
  std::string client_id = IdOfName(a.client()), provider_id = IdOfName(a.provider());

  if (c.program.state() != v1::Program::STATE_ACTIVE) {
    return Rule("PROGRAM_NOT_ACTIVE", absl::StrCat(c.program.name(), " is ", v1::Program::State_Name(c.program.state()),
                                                   "; only ACTIVE programs take bookings"));
  }
  ASSIGN_OR_RETURN(cv1::Role provider_role, s.RoleIn(c.clinic_id, provider_id));
  if (!ProviderRoleFits(kind, provider_role)) {
    return InvalidField("appointment.provider", absl::StrCat(a.provider(), " (", cv1::Role_Name(provider_role),
                                                             ") may not hold a ", cv1::AppointmentKind_Name(kind)));
  }
  if (kind != cv1::APPOINTMENT_KIND_CONSULTATION) {
    ASSIGN_OR_RETURN(bool on_team, s.OnCareTeam(c.clinic_id, client_id, provider_id));
    if (!on_team) {
      return Rule("PROVIDER_NOT_ON_CARE_TEAM",
                  absl::StrCat(a.provider(), " is not on the client's care team; add them to the care team first"));
    }
  }
  if (c.check_notice && start < now + FromProto(policy.minimum_notice())) {
    return Rule("MINIMUM_NOTICE", absl::StrCat("appointments must be booked at least ",
                                               absl::FormatDuration(FromProto(policy.minimum_notice())),
                                               " ahead; choose a start after ",
                                               Fmt(now + FromProto(policy.minimum_notice()), c.tz)));
  }
  KindTiming timing = TimingOf(policy, kind);
  TimeRange occupied{start - timing.before, end + timing.after};
  if (OccupiesProvider(kind)) {
    ASSIGN_OR_RETURN(auto availability, s.GetAvailability(c.clinic_id, provider_id));
    std::vector<TimeRange> open;
    if (availability) open = ExpandAvailability(availability->value, c.tz, occupied.start, occupied.end);
    if (!Covers(open, occupied)) {
      return Rule("OUTSIDE_AVAILABILITY",
                  absl::StrCat(a.provider(), " is not available for all of ", Fmt(occupied.start, c.tz), " - ",
                               Fmt(occupied.end, c.tz), " (including the kind's buffers); use SearchSlots"));
    }
  }

  AppointmentFilter of_program;
  of_program.program_id = IdOfName(c.program.name());
  of_program.limit = 100000;
  ASSIGN_OR_RETURN(auto program_appts, s.ListAppointments(c.clinic_id, of_program));
  auto counts = [&](const v1::Appointment& x) {
    return x.name() != ignore && x.name() != a.name() &&
           (Occupies(x.state()) || x.state() == v1::Appointment::STATE_FULFILLED);
  };
  if (IsMedicine(kind)) {
    bool consultation = std::any_of(program_appts.begin(), program_appts.end(), [](const v1::Appointment& x) {
      return x.kind() == cv1::APPOINTMENT_KIND_CONSULTATION && x.state() == v1::Appointment::STATE_FULFILLED;
    });
    if (!consultation) {
      return Rule("CONSULTATION_NOT_FULFILLED",
                  "no medicine session before the consultation: book a CONSULTATION and mark it FULFILLED first");
    }
    if (!c.program.has_dose_plan()) {
      return Rule("DOSE_PLAN_MISSING",
                  "no medicine session before a dose plan exists: a clinician on the care team must call SetDosePlan");
    }
    int64_t medicine = std::count_if(program_appts.begin(), program_appts.end(), [&](const v1::Appointment& x) {
      return IsMedicine(x.kind()) && counts(x);
    });
    if (medicine >= c.program.dose_plan().max_sessions()) {
      return Rule("DOSE_PLAN_EXHAUSTED",
                  absl::StrCat("the dose plan authorises ", c.program.dose_plan().max_sessions(),
                               " medicine sessions and all are booked or done; the clinician must extend the plan"));
    }
    if (kind == cv1::APPOINTMENT_KIND_MEDICINE_SELF_GUIDED) {
      int64_t supervised = std::count_if(program_appts.begin(), program_appts.end(), [](const v1::Appointment& x) {
        return x.kind() == cv1::APPOINTMENT_KIND_MEDICINE_SUPERVISED && x.state() == v1::Appointment::STATE_FULFILLED;
      });
      if (supervised < policy.supervised_sessions_required()) {
        return Rule("SUPERVISED_SESSIONS_INCOMPLETE",
                    absl::StrCat("self-guided sessions need ", policy.supervised_sessions_required(),
                                 " fulfilled supervised sessions first; ", supervised, " so far"),
                    {{"required", absl::StrCat(policy.supervised_sessions_required())},
                     {"fulfilled", absl::StrCat(supervised)}});
      }
    }
    for (const auto& x : program_appts) {
      if (!IsMedicine(x.kind()) || !counts(x) || FromProto(x.start_time()) >= start) continue;
      if (x.integration_appointment().empty()) {
        return Rule("INTEGRATION_MISSING",
                    absl::StrCat("the earlier medicine session ", x.name(),
                                 " has no integration session; book one (medicine_appointment = that session) first"),
                    {{"medicine_appointment", x.name()}});
      }
    }
    absl::Duration interval = FromProto(policy.minimum_medicine_interval());
    for (const auto& x : program_appts) {
      if (!IsMedicine(x.kind()) || !counts(x)) continue;
      if (absl::AbsDuration(FromProto(x.start_time()) - start) < interval) {
        return Rule("MEDICINE_INTERVAL_TOO_SHORT",
                    absl::StrCat("medicine sessions must start at least ", absl::FormatDuration(interval),
                                 " apart; ", x.name(), " starts ", Fmt(FromProto(x.start_time()), c.tz)),
                    {{"conflicting_appointment", x.name()}});
      }
    }
    // Re-entry: a long gap since the last dose needs a clinician review after that dose.
    std::optional<absl::Time> last_end;
    for (const auto& x : program_appts) {
      if (IsMedicine(x.kind()) && x.state() == v1::Appointment::STATE_FULFILLED && FromProto(x.end_time()) <= start) {
        last_end = std::max(last_end.value_or(absl::InfinitePast()), FromProto(x.end_time()));
      }
    }
    if (last_end && start - *last_end > FromProto(policy.reentry_gap())) {
      bool reviewed = std::any_of(program_appts.begin(), program_appts.end(), [&](const v1::Appointment& x) {
        return x.kind() == cv1::APPOINTMENT_KIND_CLINICIAN_REVIEW && x.state() == v1::Appointment::STATE_FULFILLED &&
               FromProto(x.start_time()) >= *last_end;
      });
      if (!reviewed) {
        return Rule("CLINICIAN_REVIEW_REQUIRED",
                    absl::StrCat("the last medicine session ended more than ",
                                 absl::FormatDuration(FromProto(policy.reentry_gap())),
                                 " before this one; a CLINICIAN_REVIEW must be fulfilled first"));
      }
    }
  }
  if (kind == cv1::APPOINTMENT_KIND_INTEGRATION && !a.medicine_appointment().empty()) {
    ASSIGN_OR_RETURN(auto med, s.GetAppointment(c.clinic_id, IdOfName(a.medicine_appointment())));
    if (!med || !IsMedicine(med->value.kind()) || med->value.program() != a.program()) {
      return InvalidField("appointment.medicine_appointment", "must be a medicine session of the same program");
    }
    if (!Occupies(med->value.state()) && med->value.state() != v1::Appointment::STATE_FULFILLED) {
      return Rule("INVALID_STATE", absl::StrCat(med->value.name(), " is ",
                                                v1::Appointment::State_Name(med->value.state())));
    }
    const std::string& linked = med->value.integration_appointment();
    if (!linked.empty() && linked != a.name() && linked != ignore) {
      return MakeError(absl::StatusCode::kAlreadyExists, "ALREADY_EXISTS",
                       absl::StrCat(med->value.name(), " already has the integration session ", linked));
    }
    absl::Time window_start = FromProto(med->value.end_time());
    absl::Time window_end = window_start + FromProto(policy.integration_window());
    if (start < window_start || start > window_end) {
      return Rule("INTEGRATION_OUTSIDE_WINDOW",
                  absl::StrCat("the integration session must start between ", Fmt(window_start, c.tz), " and ",
                               Fmt(window_end, c.tz)),
                  {{"window_start", absl::FormatTime(window_start)}, {"window_end", absl::FormatTime(window_end)}});
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<v1::Slot>> Scheduler::FindSlots(SchedulingStore& s, const v1::Clinic& clinic,
                                                           cv1::AppointmentKind kind, cv1::CareSetting setting,
                                                           const std::vector<std::string>& provider_ids,
                                                           const std::string& client_id, absl::Time from,
                                                           absl::Time to, absl::Duration duration, size_t limit) {
  std::string clinic_id = IdOfName(clinic.name());
  ASSIGN_OR_RETURN(absl::TimeZone tz, ZoneOf(clinic));
  KindTiming timing = TimingOf(clinic.policy(), kind);
  absl::Time earliest = clock_.Now() + FromProto(clinic.policy().minimum_notice());
  absl::Time span_from = from - timing.before, span_to = to + duration + timing.after;
  std::vector<TimeRange> client_busy;
  if (!client_id.empty()) {
    ASSIGN_OR_RETURN(auto b, s.Busy(clinic_id, "client:" + client_id, span_from, span_to));
    client_busy = ToRanges(b);
  }
  std::vector<std::pair<std::string, std::vector<TimeRange>>> rooms;
  if (NeedsRoom(kind, setting)) {
    for (const auto& room : MedicineRooms(clinic)) {
      ASSIGN_OR_RETURN(auto b, s.Busy(clinic_id, "room:" + room, span_from, span_to));
      rooms.emplace_back(room, ToRanges(b));
    }
  }
  std::vector<absl::Time> starts = GridStarts(tz, from, to, absl::Minutes(15));
  std::vector<v1::Slot> slots;
  for (const auto& provider : provider_ids) {
    std::vector<TimeRange> open, busy;
    if (OccupiesProvider(kind)) {
      ASSIGN_OR_RETURN(auto availability, s.GetAvailability(clinic_id, provider));
      if (!availability) continue;
      open = ExpandAvailability(availability->value, tz, span_from, span_to);
      ASSIGN_OR_RETURN(auto b, s.Busy(clinic_id, "provider:" + provider, span_from, span_to));
      busy = ToRanges(b);
    }
    for (absl::Time start : starts) {
      if (start < earliest) continue;
      TimeRange appt{start, start + duration};
      TimeRange occupied{start - timing.before, appt.end + timing.after};
      if (OccupiesProvider(kind) && (!Covers(open, occupied) || OverlapsAny(busy, occupied))) continue;
      if (OverlapsAny(client_busy, appt)) continue;
      std::string room;
      if (NeedsRoom(kind, setting)) {
        for (const auto& [id, room_busy] : rooms) {
          if (!OverlapsAny(room_busy, occupied)) {
            room = id;
            break;
          }
        }
        if (room.empty()) continue;
      }
      v1::Slot slot;
      *slot.mutable_start_time() = ToProto(appt.start);
      *slot.mutable_end_time() = ToProto(appt.end);
      *slot.mutable_local_start() = ToLocalDateTime(appt.start, tz);
      slot.set_provider(PersonName(provider));
      slot.set_room(room);
      slots.push_back(std::move(slot));
    }
  }
  std::sort(slots.begin(), slots.end(), [](const v1::Slot& a, const v1::Slot& b) {
    auto ta = FromProto(a.start_time()), tb = FromProto(b.start_time());
    return ta != tb ? ta < tb : a.provider() < b.provider();
  });
  if (slots.size() > limit) slots.resize(limit);
  return slots;
}

absl::StatusOr<v1::SearchSlotsResponse> Scheduler::SearchSlots(const P& p, const v1::SearchSlotsRequest& r) {
  ASSIGN_OR_RETURN(auto ids, api::ParseName(r.parent(), "clinics/*", "parent"));
  RETURN_IF_ERROR(InClinic(p, ids[0]));
  std::vector<FieldViolation> v;
  if (r.kind() == cv1::APPOINTMENT_KIND_UNSPECIFIED) v.push_back({"kind", "required"});
  if (r.provider().empty() && r.client().empty()) v.push_back({"provider", "give a provider, a client, or both"});
  absl::Time from = FromProto(r.range().start_time()), to = FromProto(r.range().end_time());
  if (!r.has_range() || to <= from || to - from > absl::Hours(24 * 31)) {
    v.push_back({"range", "required, end after start, at most 31 days"});
  }
  absl::Duration duration = FromProto(r.duration());
  if (r.has_duration() && (duration < absl::Minutes(15) || duration > absl::Hours(12) ||
                           duration % absl::Minutes(1) != absl::ZeroDuration())) {
    v.push_back({"duration", "15m-12h in whole minutes"});
  }
  cv1::CareSetting setting = r.setting() == cv1::CARE_SETTING_UNSPECIFIED ? DefaultSetting(r.kind()) : r.setting();
  if (r.kind() != cv1::APPOINTMENT_KIND_UNSPECIFIED && !SettingAllowed(r.kind(), setting)) {
    v.push_back({"setting", "not allowed for this kind"});
  }
  if (!v.empty()) return InvalidFields(std::move(v));
  ASSIGN_OR_RETURN(int size, api::PageSize(r.page_size(), 100, 1000));
  ASSIGN_OR_RETURN(int64_t offset, api::ParsePageToken(r.page_token(), r));
  return Read<v1::SearchSlotsResponse>([&](SchedulingStore& s) -> absl::StatusOr<v1::SearchSlotsResponse> {
    ASSIGN_OR_RETURN(v1::Clinic clinic, LoadClinic(s, ids[0]));
    std::string client_id = r.client().empty() ? "" : IdOfName(r.client());
    if (!client_id.empty()) {
      RETURN_IF_ERROR(RequireClientOrStaff(s, p, ids[0], client_id));
    } else if (p.role == auth::Role::kClient || p.role == auth::Role::kSitter) {
      return Denied("PERMISSION_DENIED_NOT_SELF", "clients search slots for themselves: set client");
    }
    std::vector<std::string> providers;
    if (!r.provider().empty()) {
      providers.push_back(IdOfName(r.provider()));
      ASSIGN_OR_RETURN(cv1::Role role, s.RoleIn(ids[0], providers[0]));
      if (!ProviderRoleFits(r.kind(), role)) {
        return InvalidField("provider", absl::StrCat(r.provider(), " may not hold this kind of appointment"));
      }
    } else {
      ASSIGN_OR_RETURN(auto team, s.GetCareTeam(ids[0], client_id));
      if (team) {
        for (const auto& m : team->value.members()) {
          if (ProviderRoleFits(r.kind(), m.role())) providers.push_back(IdOfName(m.person()));
        }
      }
    }
    absl::Duration d = r.has_duration() ? duration : TimingOf(clinic.policy(), r.kind()).duration;
    ASSIGN_OR_RETURN(auto slots, FindSlots(s, clinic, r.kind(), setting, providers, client_id, from, to, d,
                                           static_cast<size_t>(offset + size + 1)));
    v1::SearchSlotsResponse out;
    for (size_t i = offset; i < slots.size() && i < static_cast<size_t>(offset + size); ++i) *out.add_slots() = slots[i];
    if (slots.size() > static_cast<size_t>(offset + size)) out.set_next_page_token(api::MakePageToken(offset + size, r));
    return out;
  });
}

// ---------------------------------------------------------------------------- Booking

absl::StatusOr<v1::BookAppointmentResponse> Scheduler::Book(SchedulingStore& s, const P& p,
                                                            const std::string& clinic_id, v1::Appointment a,
                                                            bool propose, const std::string& waitlist_entry) {
  BookingContext c;
  c.clinic_id = clinic_id;
  c.caller = &p;
  ASSIGN_OR_RETURN(c.clinic, LoadClinic(s, clinic_id));
  ASSIGN_OR_RETURN(c.tz, ZoneOf(c.clinic));
  ASSIGN_OR_RETURN(auto program_ids, api::ParseName(a.program(), "clinics/*/programs/*", "appointment.program"));
  if (program_ids[0] != clinic_id) return InvalidField("appointment.program", "must be a program of the same clinic");
  ASSIGN_OR_RETURN(auto program, s.GetProgram(clinic_id, program_ids[1]));
  if (!program) return NotFound(a.program());
  c.program = program->value;
  a.set_client(c.program.client());
  // Permission: the client for their own program (not propose), staff, partners.
  RETURN_IF_ERROR(RequireClientOrStaff(s, p, clinic_id, IdOfName(a.client())));
  if (p.role == auth::Role::kClient && propose) {
    return Denied("PERMISSION_DENIED_ROLE", "clients book directly; only staff propose appointments");
  }
  if (a.setting() == cv1::CARE_SETTING_UNSPECIFIED) a.set_setting(DefaultSetting(a.kind()));
  if (NeedsRoom(a.kind(), a.setting())) {
    std::vector<std::string> rooms = MedicineRooms(c.clinic);
    if (!a.room().empty() && std::find(rooms.begin(), rooms.end(), a.room()) == rooms.end()) {
      return InvalidField("appointment.room", "must be a room of the clinic that supports medicine sessions");
    }
  } else if (!a.room().empty()) {
    bool known = false;
    for (const auto& room : c.clinic.rooms()) known = known || room.room_id() == a.room();
    if (!known || a.setting() != cv1::CARE_SETTING_IN_CLINIC) {
      return InvalidField("appointment.room", "must be a room of the clinic, and only for in-clinic appointments");
    }
  }
  absl::Time now = clock_.Now();
  std::string id = api::NewId();
  a.set_name(absl::StrCat("clinics/", clinic_id, "/appointments/", id));
  a.set_state(propose ? v1::Appointment::STATE_PROPOSED : v1::Appointment::STATE_BOOKED);
  a.set_waitlist_entry(waitlist_entry);
  a.clear_integration_appointment();
  a.clear_cancel_reason();
  a.clear_cancelled_by();
  *a.mutable_local_start() = ToLocalDateTime(FromProto(a.start_time()), c.tz);
  *a.mutable_create_time() = *a.mutable_update_time() = ToProto(now);
  a.set_etag(EtagOf(1));
  c.appointment = a;
  RETURN_IF_ERROR(CheckBooking(s, c, ""));

  // Room: the requested one, or the free medicine room with the lowest id.
  KindTiming timing = TimingOf(c.clinic.policy(), a.kind());
  absl::Time start = FromProto(a.start_time()), end = FromProto(a.end_time());
  TimeRange occupied{start - timing.before, end + timing.after};
  RETURN_IF_ERROR(AssignRoom(s, clinic_id, c.clinic, occupied, "", a));
  RETURN_IF_ERROR(s.InsertAppointment(clinic_id, id, a));
  RETURN_IF_ERROR(s.ClaimTime(clinic_id, id, ClaimsOf(a, occupied)));
  if (a.kind() == cv1::APPOINTMENT_KIND_INTEGRATION && !a.medicine_appointment().empty()) {
    ASSIGN_OR_RETURN(auto med, s.GetAppointment(clinic_id, IdOfName(a.medicine_appointment())));
    v1::Appointment m = med->value;
    m.set_integration_appointment(a.name());
    *m.mutable_update_time() = ToProto(now);
    m.set_etag(EtagOf(med->revision + 1));
    RETURN_IF_ERROR(s.UpdateAppointment(clinic_id, IdOfName(m.name()), m, med->revision, now));
  }
  auto event = NewEvent(clinic_id, a.name(), now);
  *event.mutable_appointment_booked()->mutable_appointment() = a;
  RETURN_IF_ERROR(s.Publish(event, now));

  v1::BookAppointmentResponse out;
  *out.mutable_appointment() = a;
  if (IsMedicine(a.kind())) {
    // Propose integration slots with the client's therapists inside the window.
    std::vector<std::string> therapists;
    ASSIGN_OR_RETURN(auto team, s.GetCareTeam(clinic_id, IdOfName(a.client())));
    if (team) {
      for (const auto& m : team->value.members()) {
        if (m.role() == cv1::ROLE_THERAPIST) therapists.push_back(IdOfName(m.person()));
      }
    }
    absl::Duration window = FromProto(c.clinic.policy().integration_window());
    ASSIGN_OR_RETURN(auto slots, FindSlots(s, c.clinic, cv1::APPOINTMENT_KIND_INTEGRATION, cv1::CARE_SETTING_IN_CLINIC,
                                           therapists, IdOfName(a.client()), end, end + window,
                                           TimingOf(c.clinic.policy(), cv1::APPOINTMENT_KIND_INTEGRATION).duration, 10));
    for (auto& slot : slots) *out.add_proposed_integration_slots() = std::move(slot);
  }
  return out;
}

namespace {
absl::Status ValidateAppointmentShape(const v1::Appointment& a) {
  std::vector<FieldViolation> v;
  if (a.kind() == cv1::APPOINTMENT_KIND_UNSPECIFIED) v.push_back({"appointment.kind", "required"});
  if (a.provider().rfind("people/", 0) != 0) v.push_back({"appointment.provider", "required: people/{id}"});
  absl::Time start = FromProto(a.start_time()), end = FromProto(a.end_time());
  if (!a.has_start_time() || a.start_time().seconds() % 60 != 0 || a.start_time().nanos() != 0) {
    v.push_back({"appointment.start_time", "required, in whole minutes"});
  }
  if (!a.has_end_time() || end <= start || end - start > absl::Hours(12) || a.end_time().seconds() % 60 != 0 || a.end_time().nanos() != 0) {
    v.push_back({"appointment.end_time", "required: after start_time, at most 12h later, in whole minutes"});
  }
  if (a.kind() != cv1::APPOINTMENT_KIND_UNSPECIFIED && a.setting() != cv1::CARE_SETTING_UNSPECIFIED &&
      !SettingAllowed(a.kind(), a.setting())) {
    v.push_back({"appointment.setting", absl::StrCat(cv1::CareSetting_Name(a.setting()), " is not allowed for ",
                                                     cv1::AppointmentKind_Name(a.kind()))});
  }
  if (!a.medicine_appointment().empty() && a.kind() != cv1::APPOINTMENT_KIND_INTEGRATION) {
    v.push_back({"appointment.medicine_appointment", "only integration appointments link a medicine session"});
  }
  if (!v.empty()) return InvalidFields(std::move(v));
  return absl::OkStatus();
}
}  // namespace

absl::StatusOr<v1::BookAppointmentResponse> Scheduler::BookAppointment(const P& p,
                                                                       const v1::BookAppointmentRequest& r) {
  ASSIGN_OR_RETURN(auto ids, api::ParseName(r.parent(), "clinics/*", "parent"));
  RETURN_IF_ERROR(InClinic(p, ids[0]));
  RETURN_IF_ERROR(ValidateAppointmentShape(r.appointment()));
  return Mutate<v1::BookAppointmentResponse>(p, "BookAppointment", r.request_id(), r, [&](SchedulingStore& s) {
    return Book(s, p, ids[0], r.appointment(), r.propose(), "");
  });
}

namespace {
// Who may read an appointment: its provider, the client themself, or staff for the client.
// nullopt when that takes a care-team lookup.
std::optional<absl::Status> ReadableWithoutLookup(const auth::Principal& p, const std::string& clinic_id,
                                                  const v1::Appointment& a) {
  if (IsProvider(p) && IdOfName(a.provider()) == PersonId(p)) return absl::OkStatus();
  return ClientOrStaffWithoutLookup(p, clinic_id, IdOfName(a.client()));
}
}  // namespace

absl::StatusOr<v1::Appointment> Scheduler::GetAppointment(const P& p, const v1::GetAppointmentRequest& r) {
  ASSIGN_OR_RETURN(auto ids, api::ParseName(r.name(), "clinics/*/appointments/*", "name"));
  RETURN_IF_ERROR(InClinic(p, ids[0]));
  AppointmentCache* cache = options_.appointment_cache;
  AppointmentCache::Ticket ticket;
  if (cache != nullptr) ticket = cache->BeginRead();
  return Read<v1::Appointment>([&](SchedulingStore& s) -> absl::StatusOr<v1::Appointment> {
    ASSIGN_OR_RETURN(auto a, s.GetAppointment(ids[0], ids[1]));
    if (!a) return NotFound(r.name());
    if (cache != nullptr) cache->Fill(ticket, ids[0], ids[1], a->value);
    auto decided = ReadableWithoutLookup(p, ids[0], a->value);
    RETURN_IF_ERROR(decided ? *decided : RequireClientOrStaff(s, p, ids[0], IdOfName(a->value.client())));
    return a->value;
  });
}

std::optional<v1::Appointment> Scheduler::GetAppointmentCached(const P& p, const v1::GetAppointmentRequest& r) {
  if (options_.appointment_cache == nullptr) return std::nullopt;
  auto ids = api::ParseName(r.name(), "clinics/*/appointments/*", "name");
  if (!ids.ok() || !InClinic(p, (*ids)[0]).ok()) return std::nullopt;
  std::shared_ptr<const v1::Appointment> a = options_.appointment_cache->Get((*ids)[0], (*ids)[1]);
  if (a == nullptr) return std::nullopt;
  auto decided = ReadableWithoutLookup(p, (*ids)[0], *a);
  if (!decided || !decided->ok()) return std::nullopt;
  return *a;
}

absl::StatusOr<v1::ListAppointmentsResponse> Scheduler::ListAppointments(const P& p,
                                                                         const v1::ListAppointmentsRequest& r) {
  ASSIGN_OR_RETURN(auto ids, api::ParseName(r.parent(), "clinics/*", "parent"));
  RETURN_IF_ERROR(InClinic(p, ids[0]));
  AppointmentFilter f;
  f.client_id = r.client().empty() ? "" : IdOfName(r.client());
  f.provider_id = r.provider().empty() ? "" : IdOfName(r.provider());
  f.room = r.room();
  f.program_id = r.program().empty() ? "" : IdOfName(r.program());
  f.kinds.assign(r.kinds().begin(), r.kinds().end());
  f.states.assign(r.states().begin(), r.states().end());
  if (r.time_range().has_start_time()) f.from = FromProto(r.time_range().start_time());
  if (r.time_range().has_end_time()) f.to = FromProto(r.time_range().end_time());
  if (p.role == auth::Role::kClient) {
    if (!f.client_id.empty() && f.client_id != PersonId(p)) {
      return Denied("PERMISSION_DENIED_NOT_SELF", "clients list only their own appointments");
    }
    f.client_id = PersonId(p);
  } else if (IsProvider(p)) {
    f.member_id = PersonId(p);
  } else if (!IsAdmin(p) && !IsService(p) && p.role != auth::Role::kPartner) {
    return Denied("PERMISSION_DENIED_ROLE", "you may not list appointments");
  }
  ASSIGN_OR_RETURN(int size, api::PageSize(r.page_size(), 50, 500));
  ASSIGN_OR_RETURN(f.offset, api::ParsePageToken(r.page_token(), r));
  f.limit = size + 1;
  return Read<v1::ListAppointmentsResponse>([&](SchedulingStore& s) -> absl::StatusOr<v1::ListAppointmentsResponse> {
    ASSIGN_OR_RETURN(auto list, s.ListAppointments(ids[0], f));
    v1::ListAppointmentsResponse out;
    for (size_t i = 0; i < list.size() && i < static_cast<size_t>(size); ++i) *out.add_appointments() = list[i];
    if (list.size() > static_cast<size_t>(size)) out.set_next_page_token(api::MakePageToken(f.offset + size, r));
    return out;
  });
}

absl::StatusOr<v1::Appointment> Scheduler::RescheduleAppointment(const P& p,
                                                                 const v1::RescheduleAppointmentRequest& r) {
  ASSIGN_OR_RETURN(auto ids, api::ParseName(r.name(), "clinics/*/appointments/*", "name"));
  RETURN_IF_ERROR(InClinic(p, ids[0]));
  return Mutate<v1::Appointment>(p, "RescheduleAppointment", r.request_id(), r,
                                 [&](SchedulingStore& s) -> absl::StatusOr<v1::Appointment> {
    ASSIGN_OR_RETURN(auto stored, s.GetAppointment(ids[0], ids[1]));
    if (!stored) return NotFound(r.name());
    v1::Appointment before = stored->value;
    RETURN_IF_ERROR(RequireClientOrStaff(s, p, ids[0], IdOfName(before.client())));
    RETURN_IF_ERROR(EtagMatches(r.etag(), stored->revision, r.name()));
    if (before.state() != v1::Appointment::STATE_PROPOSED && before.state() != v1::Appointment::STATE_BOOKED) {
      return Rule("INVALID_STATE", absl::StrCat("only PROPOSED or BOOKED appointments can be rescheduled; this one is ",
                                                v1::Appointment::State_Name(before.state())));
    }
    v1::Appointment a = before;
    *a.mutable_start_time() = r.start_time();
    *a.mutable_end_time() = r.end_time();
    if (!r.provider().empty()) a.set_provider(r.provider());
    a.set_room(r.room());
    RETURN_IF_ERROR(ValidateAppointmentShape(a));
    BookingContext c;
    c.clinic_id = ids[0];
    c.caller = &p;
    ASSIGN_OR_RETURN(c.clinic, LoadClinic(s, ids[0]));
    ASSIGN_OR_RETURN(c.tz, ZoneOf(c.clinic));
    absl::Time now = clock_.Now();
    if (p.role == auth::Role::kClient &&
        FromProto(before.start_time()) - now < FromProto(c.clinic.policy().reschedule_window())) {
      return Rule("RESCHEDULE_WINDOW",
                  absl::StrCat("clients may not reschedule within ",
                               absl::FormatDuration(FromProto(c.clinic.policy().reschedule_window())),
                               " of the start; call the clinic"));
    }
    ASSIGN_OR_RETURN(auto program, s.GetProgram(ids[0], IdOfName(a.program())));
    c.program = program->value;
    c.appointment = a;
    RETURN_IF_ERROR(CheckBooking(s, c, a.name()));
    // A medicine session moved so that its linked integration falls outside the window.
    if (IsMedicine(a.kind()) && !a.integration_appointment().empty()) {
      ASSIGN_OR_RETURN(auto integ, s.GetAppointment(ids[0], IdOfName(a.integration_appointment())));
      if (integ) {
        absl::Time is = FromProto(integ->value.start_time()), e = FromProto(a.end_time());
        if (is < e || is > e + FromProto(c.clinic.policy().integration_window())) {
          return Rule("INTEGRATION_OUTSIDE_WINDOW",
                      absl::StrCat("moving this session would put its integration session ", integ->value.name(),
                                   " outside the integration window; reschedule that one too"));
        }
      }
    }
    RETURN_IF_ERROR(s.ReleaseTime(ids[0], ids[1]));
    KindTiming timing = TimingOf(c.clinic.policy(), a.kind());
    absl::Time start = FromProto(a.start_time()), end = FromProto(a.end_time());
    TimeRange occupied{start - timing.before, end + timing.after};
    RETURN_IF_ERROR(AssignRoom(s, ids[0], c.clinic, occupied, before.room(), a));
    RETURN_IF_ERROR(s.ClaimTime(ids[0], ids[1], ClaimsOf(a, occupied)));
    *a.mutable_local_start() = ToLocalDateTime(start, c.tz);
    *a.mutable_update_time() = ToProto(now);
    a.set_etag(EtagOf(stored->revision + 1));
    RETURN_IF_ERROR(s.UpdateAppointment(ids[0], ids[1], a, stored->revision, now));
    auto event = NewEvent(ids[0], a.name(), now);
    auto* moved = event.mutable_appointment_rescheduled();
    *moved->mutable_appointment() = a;
    *moved->mutable_previous_start_time() = before.start_time();
    *moved->mutable_previous_end_time() = before.end_time();
    moved->set_previous_provider(before.provider());
    moved->set_previous_room(before.room());
    RETURN_IF_ERROR(s.Publish(event, now));
    RETURN_IF_ERROR(OfferFreedSlot(s, ids[0], before));
    return a;
  });
}

absl::StatusOr<v1::Appointment> Scheduler::CancelAppointment(const P& p, const v1::CancelAppointmentRequest& r) {
  ASSIGN_OR_RETURN(auto ids, api::ParseName(r.name(), "clinics/*/appointments/*", "name"));
  RETURN_IF_ERROR(InClinic(p, ids[0]));
  if (r.reason().empty() || r.reason().size() > 1000) return InvalidField("reason", "required, 1-1000 characters");
  return Mutate<v1::Appointment>(p, "CancelAppointment", r.request_id(), r,
                                 [&](SchedulingStore& s) -> absl::StatusOr<v1::Appointment> {
    ASSIGN_OR_RETURN(auto stored, s.GetAppointment(ids[0], ids[1]));
    if (!stored) return NotFound(r.name());
    v1::Appointment a = stored->value;
    RETURN_IF_ERROR(RequireClientOrStaff(s, p, ids[0], IdOfName(a.client())));
    RETURN_IF_ERROR(EtagMatches(r.etag(), stored->revision, r.name()));
    if (!Occupies(a.state())) {
      return MakeError(absl::StatusCode::kFailedPrecondition, "INVALID_TRANSITION",
                       absl::StrCat("a ", v1::Appointment::State_Name(a.state()), " appointment cannot be cancelled"),
                       {{"from", v1::Appointment::State_Name(a.state())}, {"to", "STATE_CANCELLED"}});
    }
    ASSIGN_OR_RETURN(v1::Clinic clinic, LoadClinic(s, ids[0]));
    absl::Time now = clock_.Now();
    if (p.role == auth::Role::kClient) {
      if (a.state() != v1::Appointment::STATE_PROPOSED && a.state() != v1::Appointment::STATE_BOOKED) {
        return Rule("INVALID_STATE", "clients cancel only proposed or booked appointments; call the clinic");
      }
      if (FromProto(a.start_time()) - now < FromProto(clinic.policy().cancellation_window())) {
        return Rule("CANCELLATION_WINDOW",
                    absl::StrCat("clients may not cancel within ",
                                 absl::FormatDuration(FromProto(clinic.policy().cancellation_window())),
                                 " of the start; call the clinic"));
      }
    }
    auto previous = a.state();
    a.set_state(v1::Appointment::STATE_CANCELLED);
    a.set_cancel_reason(r.reason());
    a.set_cancelled_by(p.subject);
    *a.mutable_update_time() = ToProto(now);
    a.set_etag(EtagOf(stored->revision + 1));
    RETURN_IF_ERROR(s.ReleaseTime(ids[0], ids[1]));
    RETURN_IF_ERROR(s.UpdateAppointment(ids[0], ids[1], a, stored->revision, now));
    auto event = NewEvent(ids[0], a.name(), now);
    *event.mutable_appointment_cancelled()->mutable_appointment() = a;
    event.mutable_appointment_cancelled()->set_previous_state(previous);
    RETURN_IF_ERROR(s.Publish(event, now));
    if (a.kind() == cv1::APPOINTMENT_KIND_INTEGRATION && !a.medicine_appointment().empty()) {
      // The medicine session is integration-due again.
      ASSIGN_OR_RETURN(auto med, s.GetAppointment(ids[0], IdOfName(a.medicine_appointment())));
      if (med && med->value.integration_appointment() == a.name()) {
        v1::Appointment m = med->value;
        m.clear_integration_appointment();
        *m.mutable_update_time() = ToProto(now);
        m.set_etag(EtagOf(med->revision + 1));
        RETURN_IF_ERROR(s.UpdateAppointment(ids[0], IdOfName(m.name()), m, med->revision, now));
        auto due = NewEvent(ids[0], m.name(), now);
        *due.mutable_integration_due()->mutable_integration_due() = DueOf(m, clinic, now);
        RETURN_IF_ERROR(s.Publish(due, now));
      }
    }
    RETURN_IF_ERROR(OfferFreedSlot(s, ids[0], stored->value));
    return a;
  });
}

absl::StatusOr<v1::Appointment> Scheduler::UpdateAppointmentState(const P& p,
                                                                  const v1::UpdateAppointmentStateRequest& r) {
  ASSIGN_OR_RETURN(auto ids, api::ParseName(r.name(), "clinics/*/appointments/*", "name"));
  RETURN_IF_ERROR(InClinic(p, ids[0]));
  if (r.state() == v1::Appointment::STATE_UNSPECIFIED) return InvalidField("state", "required");
  if (r.state() == v1::Appointment::STATE_CANCELLED) return InvalidField("state", "use CancelAppointment to cancel");
  return Mutate<v1::Appointment>(p, "UpdateAppointmentState", r.request_id(), r,
                                 [&](SchedulingStore& s) -> absl::StatusOr<v1::Appointment> {
    ASSIGN_OR_RETURN(auto stored, s.GetAppointment(ids[0], ids[1]));
    if (!stored) return NotFound(r.name());
    v1::Appointment a = stored->value;
    RETURN_IF_ERROR(RequireClientOrStaff(s, p, ids[0], IdOfName(a.client())));
    RETURN_IF_ERROR(EtagMatches(r.etag(), stored->revision, r.name()));
    State from = a.state(), to = r.state();
    if (from == to) return a;
    absl::Time now = clock_.Now(), start = FromProto(a.start_time());
    bool client = p.role == auth::Role::kClient;
    bool staff = !client;  // RequireClientOrStaff let only the client or staff through
    bool admin = IsAdmin(p) || IsService(p);
    bool record_service = IsService(p);
    auto invalid = [&](absl::string_view why) {
      return MakeError(absl::StatusCode::kFailedPrecondition, "INVALID_TRANSITION",
                       absl::StrCat("cannot go from ", v1::Appointment::State_Name(from), " to ",
                                    v1::Appointment::State_Name(to), why.empty() ? "" : ": ", why),
                       {{"from", v1::Appointment::State_Name(from)}, {"to", v1::Appointment::State_Name(to)}});
    };
    auto role_denied = [&](absl::string_view who) {
      return Denied("PERMISSION_DENIED_ROLE", absl::StrCat("only ", who, " may move an appointment from ",
                                                           v1::Appointment::State_Name(from), " to ",
                                                           v1::Appointment::State_Name(to)));
    };
    switch (to) {
      case v1::Appointment::STATE_BOOKED: {
        if (from != v1::Appointment::STATE_PROPOSED) return invalid("");
        BookingContext c;
        c.clinic_id = ids[0];
        c.caller = &p;
        ASSIGN_OR_RETURN(c.clinic, LoadClinic(s, ids[0]));
        ASSIGN_OR_RETURN(c.tz, ZoneOf(c.clinic));
        ASSIGN_OR_RETURN(auto program, s.GetProgram(ids[0], IdOfName(a.program())));
        c.program = program->value;
        c.appointment = a;
        c.check_notice = false;
        RETURN_IF_ERROR(CheckBooking(s, c, a.name()));
        break;
      }
      case v1::Appointment::STATE_ARRIVED:
        if (from != v1::Appointment::STATE_BOOKED) return invalid("");
        if (!staff) return role_denied("staff");
        if (now < start - absl::Hours(2)) return invalid("arrival is recorded from 2h before the start");
        break;
      case v1::Appointment::STATE_CHECKED_IN:
        if (from != v1::Appointment::STATE_BOOKED && from != v1::Appointment::STATE_ARRIVED) return invalid("");
        if (!staff) return role_denied("staff or the session-record service");
        break;
      case v1::Appointment::STATE_FULFILLED:
        if (from != v1::Appointment::STATE_CHECKED_IN) return invalid("");
        if (IsMedicine(a.kind()) ? !record_service : !staff) {
          return role_denied(IsMedicine(a.kind()) ? "the session-record service (when the session record is completed)"
                                                  : "staff");
        }
        break;
      case v1::Appointment::STATE_NOSHOW:
        if (from != v1::Appointment::STATE_BOOKED) return invalid("");
        if (!staff) return role_denied("staff");
        if (now < start) return invalid("a no-show is recorded only after the start time");
        break;
      case v1::Appointment::STATE_ENTERED_IN_ERROR:
        if (!admin) return role_denied("clinic admins");
        break;
      default:
        return invalid("");
    }
    a.set_state(to);
    *a.mutable_update_time() = ToProto(now);
    a.set_etag(EtagOf(stored->revision + 1));
    if (!Occupies(to)) RETURN_IF_ERROR(s.ReleaseTime(ids[0], ids[1]));
    ASSIGN_OR_RETURN(v1::Clinic clinic, LoadClinic(s, ids[0]));
    auto publish_due = [&](const v1::Appointment& m) -> absl::Status {
      auto due = NewEvent(ids[0], m.name(), now);
      *due.mutable_integration_due()->mutable_integration_due() = DueOf(m, clinic, now);
      return s.Publish(due, now);
    };
    if (IsMedicine(a.kind()) && to == v1::Appointment::STATE_FULFILLED && a.integration_appointment().empty()) {
      RETURN_IF_ERROR(publish_due(a));
    }
    RETURN_IF_ERROR(s.UpdateAppointment(ids[0], ids[1], a, stored->revision, now));
    if (a.kind() == cv1::APPOINTMENT_KIND_INTEGRATION && !a.medicine_appointment().empty() &&
        (to == v1::Appointment::STATE_NOSHOW || to == v1::Appointment::STATE_ENTERED_IN_ERROR)) {
      ASSIGN_OR_RETURN(auto med, s.GetAppointment(ids[0], IdOfName(a.medicine_appointment())));
      if (med && med->value.integration_appointment() == a.name()) {
        v1::Appointment m = med->value;
        m.clear_integration_appointment();
        *m.mutable_update_time() = ToProto(now);
        m.set_etag(EtagOf(med->revision + 1));
        RETURN_IF_ERROR(s.UpdateAppointment(ids[0], IdOfName(m.name()), m, med->revision, now));
        RETURN_IF_ERROR(publish_due(m));
      }
    }
    auto event = NewEvent(ids[0], a.name(), now);
    *event.mutable_appointment_status_changed()->mutable_appointment() = a;
    event.mutable_appointment_status_changed()->set_previous_state(from);
    RETURN_IF_ERROR(s.Publish(event, now));
    return a;
  });
}

absl::StatusOr<v1::ListIntegrationDueResponse> Scheduler::ListIntegrationDue(const P& p,
                                                                             const v1::ListIntegrationDueRequest& r) {
  ASSIGN_OR_RETURN(auto ids, api::ParseName(r.parent(), "clinics/*", "parent"));
  RETURN_IF_ERROR(InClinic(p, ids[0]));
  AppointmentFilter f;
  f.client_id = r.client().empty() ? "" : IdOfName(r.client());
  f.kinds = {cv1::APPOINTMENT_KIND_MEDICINE_SUPERVISED, cv1::APPOINTMENT_KIND_MEDICINE_SELF_GUIDED};
  f.states = {v1::Appointment::STATE_PROPOSED, v1::Appointment::STATE_BOOKED, v1::Appointment::STATE_ARRIVED,
              v1::Appointment::STATE_CHECKED_IN, v1::Appointment::STATE_FULFILLED};
  f.limit = 100000;
  if (p.role == auth::Role::kClient) {
    if (!f.client_id.empty() && f.client_id != PersonId(p)) return Denied("PERMISSION_DENIED_NOT_SELF", "only your own");
    f.client_id = PersonId(p);
  } else if (IsProvider(p)) {
    f.member_id = PersonId(p);
  } else if (!IsAdmin(p) && !IsService(p) && p.role != auth::Role::kPartner) {
    return Denied("PERMISSION_DENIED_ROLE", "you may not list integration due");
  }
  ASSIGN_OR_RETURN(int size, api::PageSize(r.page_size(), 50, 500));
  ASSIGN_OR_RETURN(int64_t offset, api::ParsePageToken(r.page_token(), r));
  return Read<v1::ListIntegrationDueResponse>([&](SchedulingStore& s) -> absl::StatusOr<v1::ListIntegrationDueResponse> {
    ASSIGN_OR_RETURN(v1::Clinic clinic, LoadClinic(s, ids[0]));
    ASSIGN_OR_RETURN(auto list, s.ListAppointments(ids[0], f));
    absl::Time now = clock_.Now();
    std::vector<v1::IntegrationDue> due;
    for (const auto& a : list) {
      if (!a.integration_appointment().empty()) continue;
      due.push_back(DueOf(a, clinic, now));
    }
    std::stable_sort(due.begin(), due.end(), [](const auto& x, const auto& y) {
      return FromProto(x.due_time()) < FromProto(y.due_time());
    });
    v1::ListIntegrationDueResponse out;
    for (size_t i = offset; i < due.size() && i < static_cast<size_t>(offset + size); ++i) *out.add_integration_due() = due[i];
    if (due.size() > static_cast<size_t>(offset + size)) out.set_next_page_token(api::MakePageToken(offset + size, r));
    return out;
  });
}

// ---------------------------------------------------------------------------- Waitlist

absl::Status Scheduler::OfferFreedSlot(SchedulingStore& s, const std::string& clinic_id, const v1::Appointment& freed,
                                       const std::string& skip_entry) {
  ASSIGN_OR_RETURN(auto waiting, s.ListWaitlistEntries(clinic_id, "", {v1::WaitlistEntry::STATE_WAITING}, 0, 1000));
  ASSIGN_OR_RETURN(v1::Clinic clinic, LoadClinic(s, clinic_id));
  ASSIGN_OR_RETURN(absl::TimeZone tz, ZoneOf(clinic));
  absl::Time now = clock_.Now(), start = FromProto(freed.start_time());
  if (start < now) return absl::OkStatus();
  if (OccupiesProvider(freed.kind())) {  // taken again meanwhile: nothing to offer
    ASSIGN_OR_RETURN(auto busy, s.Busy(clinic_id, "provider:" + IdOfName(freed.provider()), start,
                                       FromProto(freed.end_time())));
    if (OverlapsAny(ToRanges(busy), {start, FromProto(freed.end_time())})) return absl::OkStatus();
  }
  for (const auto& e : waiting) {
    if (e.name() == skip_entry) continue;
    if (e.kind() != freed.kind() || (!e.provider().empty() && e.provider() != freed.provider())) continue;
    if (start < FromProto(e.earliest_start_time()) || start > FromProto(e.latest_start_time())) continue;
    if (e.client() == freed.client()) continue;
    ASSIGN_OR_RETURN(auto stored, s.GetWaitlistEntry(clinic_id, IdOfName(e.name())));
    v1::WaitlistEntry entry = stored->value;
    entry.set_state(v1::WaitlistEntry::STATE_OFFERED);
    auto* slot = entry.mutable_offered_slot();
    *slot->mutable_start_time() = freed.start_time();
    *slot->mutable_end_time() = freed.end_time();
    *slot->mutable_local_start() = ToLocalDateTime(start, tz);
    slot->set_provider(freed.provider());
    slot->set_room(freed.room());
    *entry.mutable_offer_expire_time() = ToProto(now + FromProto(clinic.policy().waitlist_offer_ttl()));
    *entry.mutable_update_time() = ToProto(now);
    entry.set_etag(EtagOf(stored->revision + 1));
    RETURN_IF_ERROR(s.UpdateWaitlistEntry(clinic_id, IdOfName(e.name()), entry, stored->revision));
    auto event = NewEvent(clinic_id, entry.name(), now);
    *event.mutable_waitlist_offer_made()->mutable_waitlist_entry() = entry;
    return s.Publish(event, now);
  }
  return absl::OkStatus();
}

absl::StatusOr<int> Scheduler::ExpireWaitlistOffers() {
  int changed = 0;
  absl::Status st = db_.InTransaction([&](db::Tx& tx) -> absl::Status {
    changed = 0;
    SchedulingStore s(tx);
    absl::Time now = clock_.Now();
    ASSIGN_OR_RETURN(auto offered, s.WaitlistEntriesInState(v1::WaitlistEntry::STATE_OFFERED, 500));
    for (const auto& [clinic_id, e] : offered) {
      if (now <= FromProto(e.offer_expire_time())) continue;
      ASSIGN_OR_RETURN(auto stored, s.GetWaitlistEntry(clinic_id, IdOfName(e.name())));
      v1::WaitlistEntry entry = stored->value;
      v1::Appointment slot;  // the lapsed offer, as a freed slot for the next entry
      slot.set_kind(entry.kind());
      slot.set_provider(entry.offered_slot().provider());
      slot.set_room(entry.offered_slot().room());
      *slot.mutable_start_time() = entry.offered_slot().start_time();
      *slot.mutable_end_time() = entry.offered_slot().end_time();
      slot.set_client(entry.client());
      bool past = now > FromProto(entry.latest_start_time());
      entry.set_state(past ? v1::WaitlistEntry::STATE_EXPIRED : v1::WaitlistEntry::STATE_WAITING);
      entry.clear_offered_slot();
      entry.clear_offer_expire_time();
      *entry.mutable_update_time() = ToProto(now);
      entry.set_etag(EtagOf(stored->revision + 1));
      RETURN_IF_ERROR(s.UpdateWaitlistEntry(clinic_id, IdOfName(entry.name()), entry, stored->revision));
      RETURN_IF_ERROR(OfferFreedSlot(s, clinic_id, slot, entry.name()));
      ++changed;
    }
    ASSIGN_OR_RETURN(auto waiting, s.WaitlistEntriesInState(v1::WaitlistEntry::STATE_WAITING, 500));
    for (const auto& [clinic_id, e] : waiting) {
      if (now <= FromProto(e.latest_start_time())) continue;
      ASSIGN_OR_RETURN(auto stored, s.GetWaitlistEntry(clinic_id, IdOfName(e.name())));
      v1::WaitlistEntry entry = stored->value;
      entry.set_state(v1::WaitlistEntry::STATE_EXPIRED);
      *entry.mutable_update_time() = ToProto(now);
      entry.set_etag(EtagOf(stored->revision + 1));
      RETURN_IF_ERROR(s.UpdateWaitlistEntry(clinic_id, IdOfName(entry.name()), entry, stored->revision));
      ++changed;
    }
    return absl::OkStatus();
  });
  if (!st.ok()) return st;
  if (changed > 0 && options_.on_commit) options_.on_commit();
  return changed;
}

absl::StatusOr<v1::WaitlistEntry> Scheduler::CreateWaitlistEntry(const P& p, const v1::CreateWaitlistEntryRequest& r) {
  ASSIGN_OR_RETURN(auto ids, api::ParseName(r.parent(), "clinics/*", "parent"));
  RETURN_IF_ERROR(InClinic(p, ids[0]));
  const auto& e = r.waitlist_entry();
  std::vector<FieldViolation> v;
  if (e.kind() == cv1::APPOINTMENT_KIND_UNSPECIFIED) v.push_back({"waitlist_entry.kind", "required"});
  absl::Time earliest = FromProto(e.earliest_start_time()), latest = FromProto(e.latest_start_time());
  if (!e.has_earliest_start_time() || !e.has_latest_start_time() || latest <= earliest ||
      latest - earliest > absl::Hours(24 * 90)) {
    v.push_back({"waitlist_entry.latest_start_time", "required: after earliest_start_time, at most 90 days later"});
  }
  if (!v.empty()) return InvalidFields(std::move(v));
  ASSIGN_OR_RETURN(auto program_ids, api::ParseName(e.program(), "clinics/*/programs/*", "waitlist_entry.program"));
  return Mutate<v1::WaitlistEntry>(p, "CreateWaitlistEntry", r.request_id(), r,
                                   [&](SchedulingStore& s) -> absl::StatusOr<v1::WaitlistEntry> {
    ASSIGN_OR_RETURN(auto program, s.GetProgram(ids[0], program_ids[1]));
    if (!program || program_ids[0] != ids[0]) return NotFound(e.program());
    RETURN_IF_ERROR(RequireClientOrStaff(s, p, ids[0], IdOfName(program->value.client())));
    if (program->value.state() != v1::Program::STATE_ACTIVE) {
      return Rule("PROGRAM_NOT_ACTIVE", "only ACTIVE programs can wait for slots");
    }
    absl::Time now = clock_.Now();
    std::string id = api::NewId();
    v1::WaitlistEntry entry = e;
    entry.set_name(absl::StrCat(r.parent(), "/waitlistEntries/", id));
    entry.set_client(program->value.client());
    entry.set_state(v1::WaitlistEntry::STATE_WAITING);
    entry.clear_offered_slot();
    entry.clear_offer_expire_time();
    entry.clear_appointment();
    *entry.mutable_create_time() = *entry.mutable_update_time() = ToProto(now);
    entry.set_etag(EtagOf(1));
    RETURN_IF_ERROR(s.InsertWaitlistEntry(ids[0], id, entry));
    return entry;
  });
}

absl::StatusOr<v1::ListWaitlistEntriesResponse> Scheduler::ListWaitlistEntries(const P& p,
                                                                               const v1::ListWaitlistEntriesRequest& r) {
  ASSIGN_OR_RETURN(auto ids, api::ParseName(r.parent(), "clinics/*", "parent"));
  RETURN_IF_ERROR(InClinic(p, ids[0]));
  std::string client = r.client().empty() ? "" : IdOfName(r.client());
  if (p.role == auth::Role::kClient) {
    if (!client.empty() && client != PersonId(p)) return Denied("PERMISSION_DENIED_NOT_SELF", "only your own entries");
    client = PersonId(p);
  } else if (!IsAdmin(p) && !IsService(p) && !IsProvider(p) && p.role != auth::Role::kPartner) {
    return Denied("PERMISSION_DENIED_ROLE", "you may not list the waitlist");
  }
  ASSIGN_OR_RETURN(int size, api::PageSize(r.page_size(), 50, 500));
  ASSIGN_OR_RETURN(int64_t offset, api::ParsePageToken(r.page_token(), r));
  std::vector<int> states(r.states().begin(), r.states().end());
  return Read<v1::ListWaitlistEntriesResponse>([&](SchedulingStore& s) -> absl::StatusOr<v1::ListWaitlistEntriesResponse> {
    ASSIGN_OR_RETURN(auto list, s.ListWaitlistEntries(ids[0], client, states, offset, size + 1));
    v1::ListWaitlistEntriesResponse out;
    for (size_t i = 0; i < list.size() && i < static_cast<size_t>(size); ++i) {
      if (IsProvider(p)) {
        ASSIGN_OR_RETURN(bool on, s.OnCareTeam(ids[0], IdOfName(list[i].client()), PersonId(p)));
        if (!on) continue;
      }
      *out.add_waitlist_entries() = list[i];
    }
    if (list.size() > static_cast<size_t>(size)) out.set_next_page_token(api::MakePageToken(offset + size, r));
    return out;
  });
}

absl::StatusOr<v1::WaitlistEntry> Scheduler::CancelWaitlistEntry(const P& p, const v1::CancelWaitlistEntryRequest& r) {
  ASSIGN_OR_RETURN(auto ids, api::ParseName(r.name(), "clinics/*/waitlistEntries/*", "name"));
  RETURN_IF_ERROR(InClinic(p, ids[0]));
  return Mutate<v1::WaitlistEntry>(p, "CancelWaitlistEntry", r.request_id(), r,
                                   [&](SchedulingStore& s) -> absl::StatusOr<v1::WaitlistEntry> {
    ASSIGN_OR_RETURN(auto stored, s.GetWaitlistEntry(ids[0], ids[1]));
    if (!stored) return NotFound(r.name());
    RETURN_IF_ERROR(RequireClientOrStaff(s, p, ids[0], IdOfName(stored->value.client())));
    RETURN_IF_ERROR(EtagMatches(r.etag(), stored->revision, r.name()));
    v1::WaitlistEntry e = stored->value;
    if (e.state() != v1::WaitlistEntry::STATE_WAITING && e.state() != v1::WaitlistEntry::STATE_OFFERED) {
      return Rule("INVALID_STATE", absl::StrCat("the entry is ", v1::WaitlistEntry::State_Name(e.state())));
    }
    e.set_state(v1::WaitlistEntry::STATE_CANCELLED);
    *e.mutable_update_time() = ToProto(clock_.Now());
    e.set_etag(EtagOf(stored->revision + 1));
    RETURN_IF_ERROR(s.UpdateWaitlistEntry(ids[0], ids[1], e, stored->revision));
    return e;
  });
}

absl::StatusOr<v1::AcceptWaitlistOfferResponse> Scheduler::AcceptWaitlistOffer(const P& p,
                                                                               const v1::AcceptWaitlistOfferRequest& r) {
  ASSIGN_OR_RETURN(auto ids, api::ParseName(r.name(), "clinics/*/waitlistEntries/*", "name"));
  RETURN_IF_ERROR(InClinic(p, ids[0]));
  return Mutate<v1::AcceptWaitlistOfferResponse>(p, "AcceptWaitlistOffer", r.request_id(), r,
                                                 [&](SchedulingStore& s) -> absl::StatusOr<v1::AcceptWaitlistOfferResponse> {
    ASSIGN_OR_RETURN(auto stored, s.GetWaitlistEntry(ids[0], ids[1]));
    if (!stored) return NotFound(r.name());
    RETURN_IF_ERROR(RequireClientOrStaff(s, p, ids[0], IdOfName(stored->value.client())));
    RETURN_IF_ERROR(EtagMatches(r.etag(), stored->revision, r.name()));
    v1::WaitlistEntry e = stored->value;
    if (e.state() != v1::WaitlistEntry::STATE_OFFERED) {
      return Rule("INVALID_STATE", "the entry has no open offer");
    }
    if (clock_.Now() > FromProto(e.offer_expire_time())) {
      return Rule("WAITLIST_OFFER_EXPIRED", "the offer has expired; the entry keeps its place for the next slot");
    }
    v1::Appointment a;
    a.set_kind(e.kind());
    a.set_program(e.program());
    a.set_provider(e.offered_slot().provider());
    a.set_setting(e.setting());
    a.set_room(e.offered_slot().room());
    *a.mutable_start_time() = e.offered_slot().start_time();
    *a.mutable_end_time() = e.offered_slot().end_time();
    ASSIGN_OR_RETURN(auto booked, Book(s, p, ids[0], a, false, e.name()));
    e.set_state(v1::WaitlistEntry::STATE_BOOKED);
    e.set_appointment(booked.appointment().name());
    *e.mutable_update_time() = ToProto(clock_.Now());
    e.set_etag(EtagOf(stored->revision + 1));
    RETURN_IF_ERROR(s.UpdateWaitlistEntry(ids[0], ids[1], e, stored->revision));
    v1::AcceptWaitlistOfferResponse out;
    *out.mutable_waitlist_entry() = e;
    *out.mutable_appointment() = booked.appointment();
    *out.mutable_proposed_integration_slots() = booked.proposed_integration_slots();
    return out;
  });
}

}  // namespace continuum::scheduling

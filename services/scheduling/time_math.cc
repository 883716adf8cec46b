#include "services/scheduling/time_math.h"

#include <algorithm>
#include <cstdint>
#include <map>
#include <utility>

namespace continuum::scheduling {
namespace {

using ::continuum::common::v1::DayOfWeek;
using ::continuum::common::v1::LocalTime;
using ::continuum::scheduling::v1::Availability;
using ::continuum::scheduling::v1::DateOverride;
using ::continuum::scheduling::v1::LocalTimeRange;

int64_t SecondsOfDay(const LocalTime& t) {
  return int64_t{t.hours()} * 3600 + int64_t{t.minutes()} * 60 + t.seconds();
}

// DayOfWeek is ISO numbered (Monday = 1 ... Sunday = 7, 0 = unset); absl::Weekday starts at
// monday = 0. An explicit switch keeps the mapping obvious and rejects UNSPECIFIED / unknown
// values instead of shifting them onto a real weekday.
std::optional<absl::Weekday> ToWeekday(DayOfWeek d) {
  switch (d) {
    case common::v1::DAY_OF_WEEK_MONDAY:
      return absl::Weekday::monday;
    case common::v1::DAY_OF_WEEK_TUESDAY:
      return absl::Weekday::tuesday;
    case common::v1::DAY_OF_WEEK_WEDNESDAY:
      return absl::Weekday::wednesday;
    case common::v1::DAY_OF_WEEK_THURSDAY:
      return absl::Weekday::thursday;
    case common::v1::DAY_OF_WEEK_FRIDAY:
      return absl::Weekday::friday;
    case common::v1::DAY_OF_WEEK_SATURDAY:
      return absl::Weekday::saturday;
    case common::v1::DAY_OF_WEEK_SUNDAY:
      return absl::Weekday::sunday;
    default:
      return std::nullopt;
  }
}

// The civil day of a Date, or nullopt if the date does not exist (CivilDay would silently
// normalise 2026-02-30 to 2026-03-02 and move the override onto the wrong day).
std::optional<absl::CivilDay> ToCivilDay(const common::v1::Date& d) {
  const absl::CivilDay day(d.year(), d.month(), d.day());
  if (day.year() != d.year() || day.month() != d.month() || day.day() != d.day()) {
    return std::nullopt;
  }
  return day;
}

void AppendCivilRanges(absl::CivilDay day,
                       const google::protobuf::RepeatedPtrField<LocalTimeRange>& hours,
                       absl::TimeZone tz, std::vector<TimeRange>* out) {
  for (const LocalTimeRange& h : hours) {
    if (auto r = CivilRangeToInstants(day, h.start(), h.end(), tz)) out->push_back(*r);
  }
}

}  // namespace

std::vector<TimeRange> MergeRanges(std::vector<TimeRange> ranges) {
  ranges.erase(std::remove_if(ranges.begin(), ranges.end(),
                              [](const TimeRange& r) { return r.start >= r.end; }),
               ranges.end());
  std::sort(ranges.begin(), ranges.end(), [](const TimeRange& a, const TimeRange& b) {
    return a.start < b.start || (a.start == b.start && a.end < b.end);
  });
  std::vector<TimeRange> merged;
  for (const TimeRange& r : ranges) {
    if (!merged.empty() && r.start <= merged.back().end) {
      merged.back().end = std::max(merged.back().end, r.end);
    } else {
      merged.push_back(r);
    }
  }
  return merged;
}

bool Covers(const std::vector<TimeRange>& ranges, const TimeRange& r) {
  if (r.start >= r.end) return false;
  // Merging first lets r span several touching or overlapping input ranges.
  for (const TimeRange& m : MergeRanges(ranges)) {
    if (m.start <= r.start && r.end <= m.end) return true;
  }
  return false;
}

bool OverlapsAny(const std::vector<TimeRange>& ranges, const TimeRange& r) {
  if (r.start >= r.end) return false;
  return std::any_of(ranges.begin(), ranges.end(), [&](const TimeRange& a) {
    return a.start < a.end && a.start < r.end && r.start < a.end;
  });
}

std::optional<TimeRange> CivilRangeToInstants(absl::CivilDay day, const LocalTime& start,
                                              const LocalTime& end, absl::TimeZone tz) {
  if (!ValidLocalTime(start, /*allow_end_of_day=*/false) ||
      !ValidLocalTime(end, /*allow_end_of_day=*/true)) {
    return std::nullopt;
  }
  // Adding seconds to the day's midnight makes 24:00:00 the next day's 00:00 for free.
  const absl::CivilSecond civil_start = absl::CivilSecond(day) + SecondsOfDay(start);
  const absl::CivilSecond civil_end = absl::CivilSecond(day) + SecondsOfDay(end);

  absl::Time start_instant;
  const absl::TimeZone::TimeInfo s = tz.At(civil_start);
  switch (s.kind) {
    case absl::TimeZone::TimeInfo::UNIQUE:
      start_instant = s.pre;
      break;
    case absl::TimeZone::TimeInfo::SKIPPED:
      // The local time never happens; the first real moment at or after it is the
      // transition (03:00 EDT for 02:30 in New York), so the range begins there rather than
      // an hour early (post) or late (pre).
      start_instant = s.trans;
      break;
    case absl::TimeZone::TimeInfo::REPEATED:
      // Start at the first occurrence so a range across the repeated hour holds both real
      // copies of it, as Availability promises.
      start_instant = s.pre;
      break;
  }

  absl::Time end_instant;
  const absl::TimeZone::TimeInfo e = tz.At(civil_end);
  switch (e.kind) {
    case absl::TimeZone::TimeInfo::UNIQUE:
      end_instant = e.pre;
      break;
    case absl::TimeZone::TimeInfo::SKIPPED:
      // Every local time before the gap is in the range and none after it, so the range
      // ends where the gap begins: the transition.
      end_instant = e.trans;
      break;
    case absl::TimeZone::TimeInfo::REPEATED:
      // End at the second occurrence so both real copies of the repeated times before the
      // end are inside. Exception: if the end is the very first repeated civil time (01:00
      // in New York), the range holds no repeated time at all; the later instant would
      // wrongly add a whole real hour (01:00-02:00 EDT) that is civilly after the end.
      if (tz.At(civil_end - 1).kind == absl::TimeZone::TimeInfo::REPEATED) {
        end_instant = e.post;
      } else {
        end_instant = e.pre;
      }
      break;
  }

  if (start_instant >= end_instant) return std::nullopt;
  return TimeRange{start_instant, end_instant};
}

std::vector<TimeRange> ExpandAvailability(const Availability& availability, absl::TimeZone tz,
                                          absl::Time from, absl::Time to) {
  if (from >= to) return {};

  std::map<absl::CivilDay, std::vector<const DateOverride*>> overrides;
  for (const DateOverride& o : availability.date_overrides()) {
    if (auto day = ToCivilDay(o.date())) overrides[*day].push_back(&o);
  }

  // One day of margin each side: the civil days are computed in tz, and ranges of a
  // neighbouring day may still touch [from, to) and merge with ranges inside it.
  const absl::CivilDay first = absl::CivilDay(tz.At(from).cs) - 1;
  const absl::CivilDay last = absl::CivilDay(tz.At(to).cs) + 1;

  std::vector<TimeRange> all;
  for (absl::CivilDay day = first; day <= last; ++day) {
    std::vector<TimeRange> day_ranges;
    const absl::Weekday weekday = absl::GetWeekday(day);
    for (const auto& w : availability.weekly_hours()) {
      if (ToWeekday(w.day_of_week()) == weekday) {
        if (auto r = CivilRangeToInstants(day, w.hours().start(), w.hours().end(), tz)) {
          day_ranges.push_back(*r);
        }
      }
    }
    if (auto it = overrides.find(day); it != overrides.end()) {
      for (const DateOverride* o : it->second) {
        switch (o->type()) {
          case DateOverride::TYPE_UNAVAILABLE:
            if (o->hours().empty()) {
              day_ranges.clear();
            } else {
              std::vector<TimeRange> off;
              AppendCivilRanges(day, o->hours(), tz, &off);
              day_ranges = SubtractRanges(day_ranges, off);
            }
            break;
          case DateOverride::TYPE_EXTRA_HOURS:
            AppendCivilRanges(day, o->hours(), tz, &day_ranges);
            break;
          default:
            break;  // Unspecified: rejected on write; ignore rather than guess.
        }
      }
    }
    all.insert(all.end(), day_ranges.begin(), day_ranges.end());
  }

  // Merge before filtering so a range continuing past `to` (e.g. 22:00-24:00 then
  // 00:00-02:00) is kept whole.
  std::vector<TimeRange> merged = MergeRanges(std::move(all));
  std::vector<TimeRange> out;
  for (const TimeRange& r : merged) {
    if (r.start < to && from < r.end) out.push_back(r);
  }
  return out;
}

std::vector<TimeRange> SubtractRanges(const std::vector<TimeRange>& ranges,
                                      const std::vector<TimeRange>& remove) {
  const std::vector<TimeRange> base = MergeRanges(ranges);
  const std::vector<TimeRange> holes = MergeRanges(remove);
  std::vector<TimeRange> out;
  size_t h = 0;
  for (const TimeRange& b : base) {
    absl::Time cursor = b.start;
    // Holes are sorted and disjoint; skip those that end before this range.
    while (h < holes.size() && holes[h].end <= cursor) ++h;
    size_t i = h;
    while (i < holes.size() && holes[i].start < b.end) {
      if (holes[i].start > cursor) out.push_back({cursor, holes[i].start});
      cursor = std::max(cursor, holes[i].end);
      if (cursor >= b.end) break;
      ++i;
    }
    if (cursor < b.end) out.push_back({cursor, b.end});
  }
  return out;  // Pieces of disjoint, sorted ranges: already merged.
}

std::vector<absl::Time> GridStarts(absl::TimeZone tz, absl::Time from, absl::Time to,
                                   absl::Duration step) {
  const int64_t step_seconds = absl::ToInt64Seconds(step);
  if (step_seconds <= 0 || from >= to) return {};

  // The grid is defined in civil time, so walk civil days (with a day of margin, since the
  // instant bounds may fall on either side of a civil midnight) and filter by instant.
  const absl::CivilDay first = absl::CivilDay(tz.At(from).cs) - 1;
  const absl::CivilDay last = absl::CivilDay(tz.At(to).cs) + 1;
  constexpr int64_t kSecondsPerDay = 24 * 60 * 60;

  std::vector<absl::Time> starts;
  auto add = [&](absl::Time t) {
    if (from <= t && t < to) starts.push_back(t);
  };
  for (absl::CivilDay day = first; day <= last; ++day) {
    for (int64_t offset = 0; offset < kSecondsPerDay; offset += step_seconds) {
      const absl::TimeZone::TimeInfo info = tz.At(absl::CivilSecond(day) + offset);
      switch (info.kind) {
        case absl::TimeZone::TimeInfo::UNIQUE:
          add(info.pre);
          break;
        case absl::TimeZone::TimeInfo::SKIPPED:
          // Nobody can meet at a local time that does not exist, and shifting it to the
          // transition would duplicate the grid point that really is at the transition.
          break;
        case absl::TimeZone::TimeInfo::REPEATED:
          // The local time happens twice; both are real, bookable moments (told apart by
          // their UTC offset), so both are offered.
          add(info.pre);
          add(info.post);
          break;
      }
    }
  }
  // Repeated hours interleave (01:00 EDT, 01:00 EST, 01:15 EDT, ...): order by instant.
  std::sort(starts.begin(), starts.end());
  starts.erase(std::unique(starts.begin(), starts.end()), starts.end());
  return starts;
}

common::v1::LocalDateTime ToLocalDateTime(absl::Time t, absl::TimeZone tz) {
  const absl::TimeZone::CivilInfo ci = tz.At(t);
  common::v1::LocalDateTime out;
  out.set_year(static_cast<int32_t>(ci.cs.year()));
  out.set_month(ci.cs.month());
  out.set_day(ci.cs.day());
  out.set_hours(ci.cs.hour());
  out.set_minutes(ci.cs.minute());
  out.set_seconds(ci.cs.second());
  out.set_time_zone(tz.name());
  out.mutable_utc_offset()->set_seconds(ci.offset);
  return out;
}

bool ValidLocalTime(const LocalTime& t, bool allow_end_of_day) {
  if (allow_end_of_day && t.hours() == 24) return t.minutes() == 0 && t.seconds() == 0;
  return t.hours() >= 0 && t.hours() <= 23 && t.minutes() >= 0 && t.minutes() <= 59 &&
         t.seconds() >= 0 && t.seconds() <= 59;
}

}  // namespace continuum::scheduling

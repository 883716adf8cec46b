// Pure time arithmetic for scheduling: instant ranges, clinic-local civil ranges and the slot
// grid. No I/O, no clock, no gRPC; every function is deterministic in its arguments.
//
// Instants are absl::Time. Clinic-local times are civil times interpreted in the clinic's
// absl::TimeZone; the DST rules (gaps and repeated hours) are documented per function and
// match continuum.scheduling.v1.Availability and SchedulingService.SearchSlots.
#pragma once

#include <optional>
#include <vector>

#include "absl/time/civil_time.h"
#include "absl/time/time.h"
#include "continuum/common/v1/types.pb.h"
#include "continuum/scheduling/v1/availability.pb.h"

namespace continuum::scheduling {

// A half-open instant range [start, end). Empty when start >= end.
struct TimeRange {
  absl::Time start;
  absl::Time end;

  friend bool operator==(const TimeRange& a, const TimeRange& b) {
    return a.start == b.start && a.end == b.end;
  }
};

// Sorts and merges overlapping or touching ranges. Empty ranges are dropped.
std::vector<TimeRange> MergeRanges(std::vector<TimeRange> ranges);

// True if r lies entirely inside the union of `ranges` (ranges need not be merged). An empty r
// is never covered: it can only come from a malformed request, so it must not pass as
// "available".
bool Covers(const std::vector<TimeRange>& ranges, const TimeRange& r);

// True if r overlaps any range (touching end == start is NOT an overlap). Empty ranges
// overlap nothing.
bool OverlapsAny(const std::vector<TimeRange>& ranges, const TimeRange& r);

// Turns a clinic-local civil range [start, end) on `day` into an instant range, DST-correctly:
// a start in a spring-forward gap starts at the transition; an end in the gap ends at the
// transition; a repeated (fall-back) start uses the earlier instant, a repeated end the later
// one, so a range across the repeated hour contains both real hours (except an end exactly at
// the first repeated civil time, see time_math.cc). end 24:00:00 = the next day's 00:00.
// Returns nullopt if the resulting range is empty or start/end are not valid LocalTimes.
std::optional<TimeRange> CivilRangeToInstants(absl::CivilDay day,
                                              const continuum::common::v1::LocalTime& start,
                                              const continuum::common::v1::LocalTime& end,
                                              absl::TimeZone tz);

// Expands weekly hours + date overrides into the merged instant ranges overlapping
// [from, to). Ranges are not clipped to [from, to), so a slot starting before `to` can be
// checked against the availability that continues after it. Per civil day touched by
// [from, to) in tz (plus one day of margin each side): the weekly hours of that weekday; then
// the override for that date, if any: TYPE_UNAVAILABLE without hours removes the whole day,
// with hours subtracts them; TYPE_EXTRA_HOURS adds its hours. Overrides with an impossible
// date (e.g. 2026-02-30) are ignored.
std::vector<TimeRange> ExpandAvailability(
    const continuum::scheduling::v1::Availability& availability, absl::TimeZone tz,
    absl::Time from, absl::Time to);

// Subtracts `remove` from `ranges` (both arbitrary), returns the merged result.
std::vector<TimeRange> SubtractRanges(const std::vector<TimeRange>& ranges,
                                      const std::vector<TimeRange>& remove);

// Candidate slot starts: every clinic-local civil time on the `step` grid whose instant lies in
// [from, to), ordered by instant, without duplicates. The grid restarts at each civil midnight
// (00:00 + k * step), which for a step dividing an hour (5m, 15m, 30m, 60m) is the civil-hour
// grid :00 :15 :30 :45. A civil time that does not exist (spring-forward gap) yields nothing;
// one that occurs twice (fall back) yields both instants. A step under one second yields
// nothing; sub-second parts of the step are ignored.
std::vector<absl::Time> GridStarts(absl::TimeZone tz, absl::Time from, absl::Time to,
                                   absl::Duration step);

// t as clinic-local civil time, with time_zone = tz.name() and utc_offset set to the offset in
// effect at t (which tells the two instants of a repeated civil time apart).
continuum::common::v1::LocalDateTime ToLocalDateTime(absl::Time t, absl::TimeZone tz);

// Validates a LocalTime: hours 0-23 (or exactly 24:00:00 when allow_end_of_day), minutes
// 0-59, seconds 0-59.
bool ValidLocalTime(const continuum::common::v1::LocalTime& t, bool allow_end_of_day);

}  // namespace continuum::scheduling

#include "services/scheduling/time_math.h"

#include <optional>
#include <ostream>
#include <set>
#include <utility>
#include <string>
#include <vector>

#include "absl/time/civil_time.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace continuum::scheduling {
namespace {

using ::continuum::common::v1::DayOfWeek;
using ::continuum::common::v1::LocalDateTime;
using ::continuum::common::v1::LocalTime;
using ::continuum::scheduling::v1::Availability;
using ::continuum::scheduling::v1::DateOverride;
using ::testing::ElementsAre;
using ::testing::IsEmpty;

absl::TimeZone Zone(const std::string& name) {
  absl::TimeZone tz;
  EXPECT_TRUE(absl::LoadTimeZone(name, &tz)) << name;
  return tz;
}
absl::TimeZone NewYork() { return Zone("America/New_York"); }
absl::TimeZone Berlin() { return Zone("Europe/Berlin"); }

// Instants are spelled in UTC so expectations never depend on the code under test.
absl::Time Utc(int y, int mo, int d, int h, int mi = 0, int s = 0) {
  return absl::FromCivil(absl::CivilSecond(y, mo, d, h, mi, s), absl::UTCTimeZone());
}

LocalTime Lt(int h, int m = 0, int s = 0) {
  LocalTime t;
  t.set_hours(h);
  t.set_minutes(m);
  t.set_seconds(s);
  return t;
}

TimeRange R(absl::Time a, absl::Time b) { return TimeRange{a, b}; }

}  // namespace

// Readable failure messages for ElementsAre on ranges (found by ADL).
void PrintTo(const TimeRange& r, std::ostream* os) {
  *os << "[" << absl::FormatTime(r.start, absl::UTCTimeZone()) << ", "
      << absl::FormatTime(r.end, absl::UTCTimeZone()) << ")";
}

namespace {

// A simple time line for range algebra: hour h on 2026-01-01 UTC.
absl::Time H(int h, int m = 0) { return Utc(2026, 1, 1, 0) + absl::Hours(h) + absl::Minutes(m); }

absl::Duration Length(const std::optional<TimeRange>& r) {
  return r ? r->end - r->start : absl::ZeroDuration();
}

absl::Duration Total(const std::vector<TimeRange>& rs) {
  absl::Duration d;
  for (const auto& r : rs) d += r.end - r.start;
  return d;
}

// Grid starts over the whole civil day `day` in tz.
std::vector<absl::Time> DayGrid(absl::TimeZone tz, absl::CivilDay day) {
  return GridStarts(tz, absl::FromCivil(day, tz), absl::FromCivil(day + 1, tz),
                    absl::Minutes(15));
}

void ExpectEvenlySpaced(const std::vector<absl::Time>& starts, absl::Duration step) {
  for (size_t i = 1; i < starts.size(); ++i) {
    EXPECT_EQ(starts[i] - starts[i - 1], step) << "between index " << i - 1 << " and " << i;
  }
}

void AddWeekly(Availability* a, DayOfWeek d, LocalTime start, LocalTime end) {
  auto* w = a->add_weekly_hours();
  w->set_day_of_week(d);
  *w->mutable_hours()->mutable_start() = start;
  *w->mutable_hours()->mutable_end() = end;
}

DateOverride* AddOverride(Availability* a, int y, int m, int d, DateOverride::Type type) {
  DateOverride* o = a->add_date_overrides();
  o->mutable_date()->set_year(y);
  o->mutable_date()->set_month(m);
  o->mutable_date()->set_day(d);
  o->set_type(type);
  return o;
}

void AddHours(DateOverride* o, LocalTime start, LocalTime end) {
  auto* h = o->add_hours();
  *h->mutable_start() = start;
  *h->mutable_end() = end;
}

Availability WeekdaysNineToFive() {
  Availability a;
  for (DayOfWeek d : {common::v1::DAY_OF_WEEK_MONDAY, common::v1::DAY_OF_WEEK_TUESDAY,
                      common::v1::DAY_OF_WEEK_WEDNESDAY, common::v1::DAY_OF_WEEK_THURSDAY,
                      common::v1::DAY_OF_WEEK_FRIDAY}) {
    AddWeekly(&a, d, Lt(9), Lt(17));
  }
  return a;
}

// ---- Grid starts across DST transitions ----

TEST(TimeMathTest, GridHasNoStartAtNonexistentLocalTimesOnNewYorkSpringForwardDay) {
  const absl::TimeZone ny = NewYork();
  const std::vector<absl::Time> starts = DayGrid(ny, absl::CivilDay(2026, 3, 8));
  ASSERT_EQ(starts.size(), 23u * 4);
  for (absl::Time t : starts) EXPECT_NE(ToLocalDateTime(t, ny).hours(), 2);
  // 01:45 EST is followed directly by 03:00 EDT, one real quarter hour later.
  EXPECT_EQ(starts[7], Utc(2026, 3, 8, 6, 45));
  EXPECT_EQ(starts[8], Utc(2026, 3, 8, 7, 0));
  EXPECT_EQ(ToLocalDateTime(starts[8], ny).hours(), 3);
  ExpectEvenlySpaced(starts, absl::Minutes(15));
}

TEST(TimeMathTest, GridHasNoStartAtNonexistentLocalTimesOnBerlinSpringForwardDay) {
  const absl::TimeZone berlin = Berlin();
  const std::vector<absl::Time> starts = DayGrid(berlin, absl::CivilDay(2026, 3, 29));
  ASSERT_EQ(starts.size(), 23u * 4);
  for (absl::Time t : starts) EXPECT_NE(ToLocalDateTime(t, berlin).hours(), 2);
  EXPECT_EQ(starts.front(), Utc(2026, 3, 28, 23, 0));  // 00:00 CET
  EXPECT_EQ(starts[8], Utc(2026, 3, 29, 1, 0));        // 03:00 CEST
  ExpectEvenlySpaced(starts, absl::Minutes(15));
}

TEST(TimeMathTest, GridListsEachRepeatedNewYorkFallBackStartOnceWithItsOwnOffset) {
  const absl::TimeZone ny = NewYork();
  const std::vector<absl::Time> starts = DayGrid(ny, absl::CivilDay(2026, 11, 1));
  ASSERT_EQ(starts.size(), 25u * 4);
  EXPECT_EQ(std::set<absl::Time>(starts.begin(), starts.end()).size(), starts.size());
  ExpectEvenlySpaced(starts, absl::Minutes(15));  // nothing lost, nothing doubled

  std::vector<std::pair<int, int>> one_am;  // (minutes, utc offset seconds)
  for (absl::Time t : starts) {
    const LocalDateTime l = ToLocalDateTime(t, ny);
    if (l.hours() == 1) {
      one_am.emplace_back(l.minutes(), static_cast<int>(l.utc_offset().seconds()));
    }
  }
  EXPECT_THAT(one_am, ElementsAre(std::pair(0, -4 * 3600), std::pair(15, -4 * 3600),
                                  std::pair(30, -4 * 3600), std::pair(45, -4 * 3600),
                                  std::pair(0, -5 * 3600), std::pair(15, -5 * 3600),
                                  std::pair(30, -5 * 3600), std::pair(45, -5 * 3600)));
  EXPECT_EQ(starts[4], Utc(2026, 11, 1, 5, 0));   // 01:00 EDT
  EXPECT_EQ(starts[8], Utc(2026, 11, 1, 6, 0));   // 01:00 EST
}

TEST(TimeMathTest, GridListsBerlinRepeatedHourTwiceOnFallBackDay) {
  const absl::TimeZone berlin = Berlin();
  const std::vector<absl::Time> starts = DayGrid(berlin, absl::CivilDay(2026, 10, 25));
  ASSERT_EQ(starts.size(), 25u * 4);
  ExpectEvenlySpaced(starts, absl::Minutes(15));
  int two_am = 0;
  for (absl::Time t : starts) two_am += ToLocalDateTime(t, berlin).hours() == 2;
  EXPECT_EQ(two_am, 8);
}

TEST(TimeMathTest, GridHasNinetySixStartsOnOrdinaryDaysOfTransitionWeeks) {
  const absl::TimeZone ny = NewYork();
  const absl::TimeZone berlin = Berlin();
  for (const auto& [tz, day] :
       std::vector<std::pair<absl::TimeZone, absl::CivilDay>>{
           {ny, absl::CivilDay(2026, 3, 7)}, {ny, absl::CivilDay(2026, 3, 9)},
           {ny, absl::CivilDay(2026, 11, 2)}, {berlin, absl::CivilDay(2026, 3, 30)},
           {berlin, absl::CivilDay(2026, 10, 24)}}) {
    const std::vector<absl::Time> starts = DayGrid(tz, day);
    EXPECT_EQ(starts.size(), 24u * 4) << tz.name() << " " << day;
    ExpectEvenlySpaced(starts, absl::Minutes(15));
  }
}

TEST(TimeMathTest, GridStartsHonourHalfOpenBoundsAndCivilHourAlignment) {
  const absl::TimeZone ny = NewYork();
  // 2026-03-09 is EDT (-4): 09:00 local = 13:00 UTC.
  EXPECT_THAT(GridStarts(ny, Utc(2026, 3, 9, 13), Utc(2026, 3, 9, 14), absl::Minutes(15)),
              ElementsAre(Utc(2026, 3, 9, 13, 0), Utc(2026, 3, 9, 13, 15),
                          Utc(2026, 3, 9, 13, 30), Utc(2026, 3, 9, 13, 45)));
  // An unaligned `from` snaps to the next civil quarter hour, not from + step.
  EXPECT_THAT(GridStarts(ny, Utc(2026, 3, 9, 13, 5), Utc(2026, 3, 9, 13, 40), absl::Minutes(15)),
              ElementsAre(Utc(2026, 3, 9, 13, 15), Utc(2026, 3, 9, 13, 30)));
  EXPECT_THAT(GridStarts(ny, Utc(2026, 3, 9, 14), Utc(2026, 3, 9, 13), absl::Minutes(15)),
              IsEmpty());
  EXPECT_THAT(GridStarts(ny, Utc(2026, 3, 9, 13), Utc(2026, 3, 9, 14), absl::ZeroDuration()),
              IsEmpty());
}

TEST(TimeMathTest, GridAlignsToCivilHourInHalfHourOffsetZone) {
  // India is UTC+05:30: local :00 is UTC :30, so a UTC-aligned grid would be wrong.
  const absl::TimeZone kolkata = Zone("Asia/Kolkata");
  EXPECT_THAT(GridStarts(kolkata, Utc(2026, 3, 9, 3, 20), Utc(2026, 3, 9, 4, 31),
                         absl::Minutes(30)),
              ElementsAre(Utc(2026, 3, 9, 3, 30), Utc(2026, 3, 9, 4, 0),
                          Utc(2026, 3, 9, 4, 30)));
}

// ---- Civil ranges to instants ----

TEST(TimeMathTest, NineToFiveIsEightRealHoursOnOrdinaryAndTransitionDays) {
  for (const absl::TimeZone& tz : {NewYork(), Berlin()}) {
    for (absl::CivilDay day : {absl::CivilDay(2026, 3, 6), absl::CivilDay(2026, 3, 8),
                               absl::CivilDay(2026, 3, 9), absl::CivilDay(2026, 3, 29),
                               absl::CivilDay(2026, 10, 25), absl::CivilDay(2026, 11, 1)}) {
      EXPECT_EQ(Length(CivilRangeToInstants(day, Lt(9), Lt(17), tz)), absl::Hours(8))
          << tz.name() << " " << day;
    }
  }
  const auto r = CivilRangeToInstants(absl::CivilDay(2026, 3, 9), Lt(9), Lt(17), NewYork());
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->start, Utc(2026, 3, 9, 13));  // EDT
  EXPECT_EQ(r->end, Utc(2026, 3, 9, 21));
}

TEST(TimeMathTest, RangeAcrossSpringForwardGapIsTwoRealHours) {
  const auto ny = CivilRangeToInstants(absl::CivilDay(2026, 3, 8), Lt(1), Lt(4), NewYork());
  ASSERT_TRUE(ny.has_value());
  EXPECT_EQ(ny->start, Utc(2026, 3, 8, 6));  // 01:00 EST
  EXPECT_EQ(ny->end, Utc(2026, 3, 8, 8));    // 04:00 EDT
  const auto berlin = CivilRangeToInstants(absl::CivilDay(2026, 3, 29), Lt(1), Lt(4), Berlin());
  ASSERT_TRUE(berlin.has_value());
  EXPECT_EQ(berlin->start, Utc(2026, 3, 29, 0));  // 01:00 CET
  EXPECT_EQ(berlin->end, Utc(2026, 3, 29, 2));    // 04:00 CEST
}

TEST(TimeMathTest, RangeStartingOrEndingInSpringForwardGapSnapsToTransition) {
  const absl::TimeZone ny = NewYork();
  const absl::CivilDay day(2026, 3, 8);
  const absl::Time transition = Utc(2026, 3, 8, 7);  // 02:00 EST == 03:00 EDT
  const auto starts_in_gap = CivilRangeToInstants(day, Lt(2, 30), Lt(4), ny);
  ASSERT_TRUE(starts_in_gap.has_value());
  EXPECT_EQ(starts_in_gap->start, transition);
  EXPECT_EQ(Length(starts_in_gap), absl::Hours(1));
  const auto ends_in_gap = CivilRangeToInstants(day, Lt(0), Lt(2, 30), ny);
  ASSERT_TRUE(ends_in_gap.has_value());
  EXPECT_EQ(ends_in_gap->end, transition);
  EXPECT_EQ(Length(ends_in_gap), absl::Hours(2));
}

TEST(TimeMathTest, RangeEntirelyInsideSpringForwardGapIsEmpty) {
  EXPECT_FALSE(
      CivilRangeToInstants(absl::CivilDay(2026, 3, 8), Lt(2), Lt(2, 45), NewYork()).has_value());
  EXPECT_FALSE(
      CivilRangeToInstants(absl::CivilDay(2026, 3, 29), Lt(2, 15), Lt(3), Berlin()).has_value());
}

TEST(TimeMathTest, RangeAcrossFallBackRepeatedHourIsFourRealHours) {
  const auto ny = CivilRangeToInstants(absl::CivilDay(2026, 11, 1), Lt(0), Lt(3), NewYork());
  ASSERT_TRUE(ny.has_value());
  EXPECT_EQ(ny->start, Utc(2026, 11, 1, 4));  // 00:00 EDT
  EXPECT_EQ(ny->end, Utc(2026, 11, 1, 8));    // 03:00 EST
  EXPECT_EQ(Length(CivilRangeToInstants(absl::CivilDay(2026, 10, 25), Lt(0), Lt(3), Berlin())),
            absl::Hours(4));
}

TEST(TimeMathTest, RepeatedStartUsesEarlierInstantAndRepeatedEndUsesLaterInstant) {
  const absl::TimeZone ny = NewYork();
  const absl::CivilDay day(2026, 11, 1);
  const auto from_repeated = CivilRangeToInstants(day, Lt(1, 30), Lt(2), ny);
  ASSERT_TRUE(from_repeated.has_value());
  EXPECT_EQ(from_repeated->start, Utc(2026, 11, 1, 5, 30));  // 01:30 EDT
  EXPECT_EQ(from_repeated->end, Utc(2026, 11, 1, 7));        // 02:00 EST
  const auto to_repeated = CivilRangeToInstants(day, Lt(0), Lt(1, 30), ny);
  ASSERT_TRUE(to_repeated.has_value());
  EXPECT_EQ(to_repeated->end, Utc(2026, 11, 1, 6, 30));  // 01:30 EST
  EXPECT_EQ(Length(to_repeated), absl::Minutes(150));
}

TEST(TimeMathTest, RangeEndingWhereRepeatedHourBeginsDoesNotIncludeIt) {
  // 01:00 occurs twice, but [00:00, 01:00) contains no repeated local time.
  const auto r = CivilRangeToInstants(absl::CivilDay(2026, 11, 1), Lt(0), Lt(1), NewYork());
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->end, Utc(2026, 11, 1, 5));  // 01:00 EDT
  EXPECT_EQ(Length(r), absl::Hours(1));
}

TEST(TimeMathTest, EndOfDayIsNextMidnightAndWholeDaysFollowDst) {
  const absl::TimeZone ny = NewYork();
  const auto evening = CivilRangeToInstants(absl::CivilDay(2026, 3, 9), Lt(20), Lt(24), ny);
  ASSERT_TRUE(evening.has_value());
  EXPECT_EQ(evening->end, Utc(2026, 3, 10, 4));  // 2026-03-10 00:00 EDT
  EXPECT_EQ(Length(CivilRangeToInstants(absl::CivilDay(2026, 3, 8), Lt(0), Lt(24), ny)),
            absl::Hours(23));
  EXPECT_EQ(Length(CivilRangeToInstants(absl::CivilDay(2026, 11, 1), Lt(0), Lt(24), ny)),
            absl::Hours(25));
  EXPECT_EQ(Length(CivilRangeToInstants(absl::CivilDay(2026, 11, 2), Lt(0), Lt(24), ny)),
            absl::Hours(24));
}

TEST(TimeMathTest, EmptyReversedOrInvalidCivilRangeIsNullopt) {
  const absl::TimeZone ny = NewYork();
  const absl::CivilDay day(2026, 3, 9);
  EXPECT_FALSE(CivilRangeToInstants(day, Lt(10), Lt(10), ny).has_value());
  EXPECT_FALSE(CivilRangeToInstants(day, Lt(11), Lt(10), ny).has_value());
  EXPECT_FALSE(CivilRangeToInstants(day, Lt(24), Lt(24), ny).has_value());
  EXPECT_FALSE(CivilRangeToInstants(day, Lt(9), Lt(25), ny).has_value());
  EXPECT_FALSE(CivilRangeToInstants(day, Lt(9, 60), Lt(10), ny).has_value());
}

TEST(TimeMathTest, ValidLocalTimeAcceptsMidnightAsEndOfDayOnlyWhenAllowed) {
  EXPECT_TRUE(ValidLocalTime(Lt(0), false));
  EXPECT_TRUE(ValidLocalTime(Lt(23, 59, 59), false));
  EXPECT_FALSE(ValidLocalTime(Lt(24), false));
  EXPECT_TRUE(ValidLocalTime(Lt(24), true));
  EXPECT_FALSE(ValidLocalTime(Lt(24, 0, 1), true));
  EXPECT_FALSE(ValidLocalTime(Lt(24, 30), true));
  EXPECT_FALSE(ValidLocalTime(Lt(-1), true));
  EXPECT_FALSE(ValidLocalTime(Lt(12, 60), false));
  EXPECT_FALSE(ValidLocalTime(Lt(12, 0, 60), false));
  EXPECT_FALSE(ValidLocalTime(Lt(12, -1), false));
}

// ---- Availability expansion ----

TEST(TimeMathTest, WeeklyHoursMapIsoWeekdaysAndCountRealHoursInSpringForwardWeek) {
  const absl::TimeZone ny = NewYork();
  Availability a;
  AddWeekly(&a, common::v1::DAY_OF_WEEK_SUNDAY, Lt(1), Lt(4));
  AddWeekly(&a, common::v1::DAY_OF_WEEK_MONDAY, Lt(9), Lt(17));
  const auto ranges = ExpandAvailability(a, ny, Utc(2026, 3, 7, 5), Utc(2026, 3, 10, 4));
  EXPECT_THAT(ranges, ElementsAre(R(Utc(2026, 3, 8, 6), Utc(2026, 3, 8, 8)),      // Sun, 2h
                                  R(Utc(2026, 3, 9, 13), Utc(2026, 3, 9, 21))));  // Mon, 8h
}

TEST(TimeMathTest, WeekdaysNineToFiveGiveFortyRealHoursInEachTransitionWeek) {
  const Availability a = WeekdaysNineToFive();
  const absl::TimeZone ny = NewYork();
  const absl::TimeZone berlin = Berlin();
  // Saturday to Saturday around each transition Sunday.
  EXPECT_EQ(Total(ExpandAvailability(a, ny, absl::FromCivil(absl::CivilDay(2026, 3, 7), ny),
                                     absl::FromCivil(absl::CivilDay(2026, 3, 14), ny))),
            absl::Hours(40));
  EXPECT_EQ(Total(ExpandAvailability(a, ny, absl::FromCivil(absl::CivilDay(2026, 10, 31), ny),
                                     absl::FromCivil(absl::CivilDay(2026, 11, 7), ny))),
            absl::Hours(40));
  EXPECT_EQ(
      Total(ExpandAvailability(a, berlin, absl::FromCivil(absl::CivilDay(2026, 3, 28), berlin),
                               absl::FromCivil(absl::CivilDay(2026, 4, 4), berlin))),
      absl::Hours(40));
}

TEST(TimeMathTest, ExpandedRangesOverlappingTheWindowAreReturnedWhole) {
  const absl::TimeZone ny = NewYork();
  // Window Mon 2026-03-09 10:00-11:00 EDT lies inside Monday 09:00-17:00.
  EXPECT_THAT(ExpandAvailability(WeekdaysNineToFive(), ny, Utc(2026, 3, 9, 14),
                                 Utc(2026, 3, 9, 15)),
              ElementsAre(R(Utc(2026, 3, 9, 13), Utc(2026, 3, 9, 21))));
  // A window in the evening overlaps nothing.
  EXPECT_THAT(ExpandAvailability(WeekdaysNineToFive(), ny, Utc(2026, 3, 9, 22),
                                 Utc(2026, 3, 10, 12)),
              IsEmpty());
}

TEST(TimeMathTest, WholeDayUnavailableOverrideRemovesOnlyThatDate) {
  const absl::TimeZone ny = NewYork();
  Availability a = WeekdaysNineToFive();
  AddOverride(&a, 2026, 3, 11, DateOverride::TYPE_UNAVAILABLE);  // Wednesday
  const auto ranges = ExpandAvailability(a, ny, Utc(2026, 3, 9, 4), Utc(2026, 3, 14, 4));
  ASSERT_EQ(ranges.size(), 4u);
  EXPECT_EQ(Total(ranges), absl::Hours(32));
  EXPECT_FALSE(OverlapsAny(ranges, R(Utc(2026, 3, 11, 4), Utc(2026, 3, 12, 4))));
  EXPECT_TRUE(Covers(ranges, R(Utc(2026, 3, 12, 13), Utc(2026, 3, 12, 21))));
}

TEST(TimeMathTest, PartialUnavailableOverrideSplitsTheDay) {
  const absl::TimeZone ny = NewYork();
  Availability a = WeekdaysNineToFive();
  AddHours(AddOverride(&a, 2026, 3, 11, DateOverride::TYPE_UNAVAILABLE), Lt(12), Lt(13));
  EXPECT_THAT(ExpandAvailability(a, ny, Utc(2026, 3, 11, 4), Utc(2026, 3, 12, 4)),
              ElementsAre(R(Utc(2026, 3, 11, 13), Utc(2026, 3, 11, 16)),
                          R(Utc(2026, 3, 11, 17), Utc(2026, 3, 11, 21))));
}

TEST(TimeMathTest, ExtraHoursOverrideAddsOnFreeDayAndMergesWithTouchingWeeklyHours) {
  const absl::TimeZone ny = NewYork();
  Availability a = WeekdaysNineToFive();
  AddHours(AddOverride(&a, 2026, 3, 14, DateOverride::TYPE_EXTRA_HOURS), Lt(10), Lt(12));  // Sat
  AddHours(AddOverride(&a, 2026, 3, 13, DateOverride::TYPE_EXTRA_HOURS), Lt(17), Lt(19));  // Fri
  EXPECT_THAT(ExpandAvailability(a, ny, Utc(2026, 3, 13, 4), Utc(2026, 3, 15, 4)),
              ElementsAre(R(Utc(2026, 3, 13, 13), Utc(2026, 3, 13, 23)),
                          R(Utc(2026, 3, 14, 14), Utc(2026, 3, 14, 16))));
}

TEST(TimeMathTest, OverrideWithImpossibleDateIsIgnored) {
  const absl::TimeZone ny = NewYork();
  Availability a = WeekdaysNineToFive();
  // 2026-02-30 must not be normalised to Monday 2026-03-02.
  AddOverride(&a, 2026, 2, 30, DateOverride::TYPE_UNAVAILABLE);
  EXPECT_THAT(ExpandAvailability(a, ny, Utc(2026, 3, 2, 5), Utc(2026, 3, 3, 5)),
              ElementsAre(R(Utc(2026, 3, 2, 14), Utc(2026, 3, 2, 22))));
}

// ---- Range algebra ----

TEST(TimeMathTest, MergeRangesJoinsOverlappingAndTouchingRangesAndDropsEmptyOnes) {
  EXPECT_THAT(MergeRanges({R(H(5), H(6)), R(H(1), H(2)), R(H(2), H(3)), R(H(2, 30), H(4)),
                           R(H(7), H(7)), R(H(9), H(8))}),
              ElementsAre(R(H(1), H(4)), R(H(5), H(6))));
  EXPECT_THAT(MergeRanges({R(H(1), H(10)), R(H(2), H(3))}), ElementsAre(R(H(1), H(10))));
  EXPECT_THAT(MergeRanges({}), IsEmpty());
}

TEST(TimeMathTest, CoversAcceptsRangesSpanningTouchingPiecesButNotGaps) {
  const std::vector<TimeRange> ranges = {R(H(3), H(5)), R(H(1), H(3)), R(H(6), H(7))};
  EXPECT_TRUE(Covers(ranges, R(H(1), H(5))));
  EXPECT_TRUE(Covers(ranges, R(H(2), H(4))));
  EXPECT_TRUE(Covers(ranges, R(H(6), H(7))));
  EXPECT_FALSE(Covers(ranges, R(H(4), H(6, 30))));  // crosses the 5-6 gap
  EXPECT_FALSE(Covers(ranges, R(H(6, 30), H(7, 1))));
  EXPECT_FALSE(Covers(ranges, R(H(2), H(2))));  // empty
  EXPECT_FALSE(Covers({}, R(H(1), H(2))));
}

TEST(TimeMathTest, OverlapsAnyTreatsTouchingRangesAsNotOverlapping) {
  const std::vector<TimeRange> booked = {R(H(10), H(11))};
  EXPECT_FALSE(OverlapsAny(booked, R(H(9), H(10))));
  EXPECT_FALSE(OverlapsAny(booked, R(H(11), H(12))));
  EXPECT_TRUE(OverlapsAny(booked, R(H(9), H(10, 1))));
  EXPECT_TRUE(OverlapsAny(booked, R(H(10, 59), H(12))));
  EXPECT_TRUE(OverlapsAny(booked, R(H(10, 15), H(10, 30))));
  EXPECT_TRUE(OverlapsAny(booked, R(H(9), H(12))));
  EXPECT_FALSE(OverlapsAny(booked, R(H(10, 30), H(10, 30))));  // empty
  EXPECT_FALSE(OverlapsAny({R(H(10), H(10))}, R(H(9), H(11))));
  EXPECT_FALSE(OverlapsAny({}, R(H(9), H(11))));
}

TEST(TimeMathTest, SubtractRangesCutsHolesAndKeepsTouchingNeighbours) {
  EXPECT_THAT(SubtractRanges({R(H(9), H(17))}, {R(H(12), H(13))}),
              ElementsAre(R(H(9), H(12)), R(H(13), H(17))));
  // Touching removals take nothing away.
  EXPECT_THAT(SubtractRanges({R(H(9), H(17))}, {R(H(8), H(9)), R(H(17), H(18))}),
              ElementsAre(R(H(9), H(17))));
  EXPECT_THAT(SubtractRanges({R(H(9), H(17))}, {R(H(8), H(18))}), IsEmpty());
  // One removal spanning several ranges, unsorted and overlapping inputs.
  EXPECT_THAT(SubtractRanges({R(H(14), H(16)), R(H(9), H(11)), R(H(10), H(12))},
                             {R(H(10), H(15)), R(H(9), H(9, 30))}),
              ElementsAre(R(H(9, 30), H(10)), R(H(15), H(16))));
  EXPECT_THAT(SubtractRanges({R(H(1), H(2)), R(H(2), H(3))}, {}), ElementsAre(R(H(1), H(3))));
}

// ---- LocalDateTime ----

TEST(TimeMathTest, ToLocalDateTimeCarriesOffsetForStandardAndDaylightTime) {
  const absl::TimeZone ny = NewYork();
  const LocalDateTime winter = ToLocalDateTime(Utc(2026, 3, 6, 14, 30), ny);
  EXPECT_EQ(winter.year(), 2026);
  EXPECT_EQ(winter.month(), 3);
  EXPECT_EQ(winter.day(), 6);
  EXPECT_EQ(winter.hours(), 9);
  EXPECT_EQ(winter.minutes(), 30);
  EXPECT_EQ(winter.seconds(), 0);
  EXPECT_EQ(winter.time_zone(), "America/New_York");
  EXPECT_EQ(winter.utc_offset().seconds(), -5 * 3600);
  const LocalDateTime summer = ToLocalDateTime(Utc(2026, 3, 9, 13, 30), ny);
  EXPECT_EQ(summer.hours(), 9);
  EXPECT_EQ(summer.utc_offset().seconds(), -4 * 3600);
  const LocalDateTime berlin = ToLocalDateTime(Utc(2026, 7, 1, 7, 0, 5), Berlin());
  EXPECT_EQ(berlin.hours(), 9);
  EXPECT_EQ(berlin.seconds(), 5);
  EXPECT_EQ(berlin.time_zone(), "Europe/Berlin");
  EXPECT_EQ(berlin.utc_offset().seconds(), 2 * 3600);
}

TEST(TimeMathTest, ToLocalDateTimeTellsTheTwoRepeatedInstantsApartByOffset) {
  const absl::TimeZone ny = NewYork();
  const LocalDateTime first = ToLocalDateTime(Utc(2026, 11, 1, 5, 30), ny);
  const LocalDateTime second = ToLocalDateTime(Utc(2026, 11, 1, 6, 30), ny);
  EXPECT_EQ(first.hours(), 1);
  EXPECT_EQ(second.hours(), 1);
  EXPECT_EQ(first.minutes(), 30);
  EXPECT_EQ(second.minutes(), 30);
  EXPECT_EQ(first.utc_offset().seconds(), -4 * 3600);
  EXPECT_EQ(second.utc_offset().seconds(), -5 * 3600);
}

}  // namespace
}  // namespace continuum::scheduling

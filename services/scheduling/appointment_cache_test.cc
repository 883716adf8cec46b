// The appointment cache on its own, with a FakeClock: lifetime, invalidation (local and by
// notice), the generation check against old reads, suspension, and its bound on entries.
#include "services/scheduling/appointment_cache.h"

#include "gtest/gtest.h"

namespace continuum::scheduling {
namespace {

v1::Appointment Appointment(const std::string& name, v1::Appointment::State state) {
  v1::Appointment a;
  a.set_name(name);
  a.set_state(state);
  return a;
}

class AppointmentCacheTest : public ::testing::Test {
 protected:
  AppointmentCacheTest() : cache_(clock_, {.ttl = absl::Seconds(2), .max_entries = 3}) { cache_.Resume(); }

  void Fill(const std::string& id, v1::Appointment::State state = v1::Appointment::STATE_BOOKED) {
    cache_.Fill(cache_.BeginRead(), "c1", id, Appointment("clinics/c1/appointments/" + id, state));
  }

  FakeClock clock_;
  AppointmentCache cache_;
};

TEST_F(AppointmentCacheTest, ServesAFilledAppointmentUntilItsLifetimeEnds) {
  EXPECT_EQ(cache_.Get("c1", "a1"), nullptr);
  Fill("a1");
  auto hit = cache_.Get("c1", "a1");
  ASSERT_NE(hit, nullptr);
  EXPECT_EQ(hit->name(), "clinics/c1/appointments/a1");
  EXPECT_EQ(cache_.Get("c2", "a1"), nullptr) << "the clinic is part of the key";
  clock_.Advance(absl::Milliseconds(1999));
  EXPECT_NE(cache_.Get("c1", "a1"), nullptr);
  clock_.Advance(absl::Milliseconds(1));
  EXPECT_EQ(cache_.Get("c1", "a1"), nullptr) << "expired at fill time + ttl";
}

TEST_F(AppointmentCacheTest, LifetimeCountsFromTheStartOfTheRead) {
  auto ticket = cache_.BeginRead();
  clock_.Advance(absl::Milliseconds(1500));  // a slow database read
  cache_.Fill(ticket, "c1", "a1", Appointment("clinics/c1/appointments/a1", v1::Appointment::STATE_BOOKED));
  clock_.Advance(absl::Milliseconds(500));
  EXPECT_EQ(cache_.Get("c1", "a1"), nullptr);
}

TEST_F(AppointmentCacheTest, InvalidationDropsTheEntryAndRefusesReadsThatBeganBeforeIt) {
  Fill("a1");
  cache_.Invalidate("c1", "a1");
  EXPECT_EQ(cache_.Get("c1", "a1"), nullptr);
  // A read that began before a change and finishes after it holds the old value.
  auto before = cache_.BeginRead();
  cache_.Invalidate("c1", "a1");
  cache_.Fill(before, "c1", "a1", Appointment("old", v1::Appointment::STATE_BOOKED));
  EXPECT_EQ(cache_.Get("c1", "a1"), nullptr) << "an old read must not overwrite a newer invalidation";
  auto after = cache_.BeginRead();
  cache_.Fill(after, "c1", "a1", Appointment("new", v1::Appointment::STATE_CANCELLED));
  ASSERT_NE(cache_.Get("c1", "a1"), nullptr);
  EXPECT_EQ(cache_.Get("c1", "a1")->state(), v1::Appointment::STATE_CANCELLED);
}

TEST_F(AppointmentCacheTest, NoticesFromTheChannelInvalidateAndGarbageEmptiesEverything) {
  Fill("a1");
  Fill("a2");
  cache_.InvalidateFromNotice("- clinics/c1/appointments/a1");
  EXPECT_EQ(cache_.Get("c1", "a1"), nullptr);
  EXPECT_NE(cache_.Get("c1", "a2"), nullptr);
  cache_.InvalidateFromNotice("1700000000000-0 clinics/c1/appointments/a2");  // with a stream entry id
  EXPECT_EQ(cache_.Get("c1", "a2"), nullptr);
  Fill("a3");
  cache_.InvalidateFromNotice("- not-a-name");
  EXPECT_EQ(cache_.Get("c1", "a3"), nullptr) << "an unreadable notice may have named anything";
}

TEST_F(AppointmentCacheTest, SuspendedCacheServesNothingAndResumesEmpty) {
  Fill("a1");
  auto during = cache_.BeginRead();
  cache_.Suspend();
  EXPECT_EQ(cache_.Get("c1", "a1"), nullptr);
  Fill("a2");
  EXPECT_EQ(cache_.Get("c1", "a2"), nullptr) << "nothing is kept while notices may be missed";
  cache_.Resume();
  EXPECT_EQ(cache_.Get("c1", "a1"), nullptr) << "resumes empty";
  cache_.Fill(during, "c1", "a1", Appointment("stale", v1::Appointment::STATE_BOOKED));
  EXPECT_EQ(cache_.Get("c1", "a1"), nullptr) << "a read begun before the suspension is refused";
  Fill("a1");
  EXPECT_NE(cache_.Get("c1", "a1"), nullptr);
}

TEST_F(AppointmentCacheTest, StartsSuspendedAndAZeroLifetimeTurnsItOff) {
  AppointmentCache fresh(clock_, {});
  fresh.Fill(fresh.BeginRead(), "c1", "a1", Appointment("x", v1::Appointment::STATE_BOOKED));
  EXPECT_EQ(fresh.Get("c1", "a1"), nullptr) << "serves only once the subscription is confirmed";
  AppointmentCache off(clock_, {.ttl = absl::ZeroDuration()});
  EXPECT_FALSE(off.enabled());
  off.Resume();
  off.Fill(off.BeginRead(), "c1", "a1", Appointment("x", v1::Appointment::STATE_BOOKED));
  EXPECT_EQ(off.Get("c1", "a1"), nullptr);
}

TEST_F(AppointmentCacheTest, HoldsAtMostMaxEntries) {
  for (const char* id : {"a1", "a2", "a3", "a4", "a5"}) Fill(id);
  int held = 0;
  for (const char* id : {"a1", "a2", "a3", "a4", "a5"}) held += cache_.Get("c1", id) != nullptr;
  EXPECT_EQ(held, 3);
  EXPECT_NE(cache_.Get("c1", "a5"), nullptr) << "the newest fill is kept";
}

}  // namespace
}  // namespace continuum::scheduling

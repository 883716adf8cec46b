// Recently read appointments, kept so that GetAppointment (the read partners and the other
// services make most) is answered from memory on the gRPC thread, without a database round
// trip or an executor hop. On PostgreSQL a primary-key read costs the backend more CPU than a
// whole gRPC call; see README "Performance".
//
// How it stays correct when several replicas write the same database:
// - Every appointment change puts a notice in the outbox, in the changing transaction
//   (SchedulingStore::UpdateAppointment). The relay PUBLISHes it on kAppointmentChangesChannel
//   and every replica's subscriber drops that appointment (milliseconds after the commit).
// - The replica that made the change drops it itself at commit, before the call returns, so a
//   caller reads its own write on the same replica at once.
// - A value read from the database is kept only if no invalidation happened while it was
//   being read (the ticket's generation), so an old read cannot overwrite a newer drop.
// - While the subscription is down (Redis unreachable, reconnecting) the cache is bypassed;
//   when it is confirmed again the cache starts empty (notices meanwhile were missed).
// - Whatever happens, an entry lives at most `ttl`: the bound on staleness if a notice is
//   lost some other way (a silently dead connection not yet noticed, say).
// So a replica can show another replica's change a few milliseconds late, never longer than
// `ttl`; booking rules never read from here (they read the database in their transaction).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/time/clock.h"
#include "continuum/scheduling/v1/appointment.pb.h"

namespace prometheus {
class Registry;
template <typename T>
class Family;
class Counter;
class Gauge;
}  // namespace prometheus

namespace continuum::scheduling {

class AppointmentCache {
 public:
  struct Options {
    absl::Duration ttl = absl::Seconds(2);  // zero: never serve (the cache is off)
    size_t max_entries = 100000;
    // Optional: lookups by result, invalidations, and whether the cache is serving (1) or
    // suspended (0: no confirmed subscription to the change notices).
    prometheus::Registry* metrics = nullptr;
  };
  // Starts suspended: nothing is served until Resume() (the subscription is confirmed).
  AppointmentCache(Clock& clock, Options options);

  bool enabled() const { return options_.ttl > absl::ZeroDuration(); }

  // The cached appointment, or nullptr (not cached, expired, or the cache is suspended).
  std::shared_ptr<const v1::Appointment> Get(absl::string_view clinic_id, absl::string_view appointment_id);

  // Take a ticket before reading an appointment from the database; Fill keeps the value only
  // if nothing was invalidated since.
  struct Ticket {
    uint64_t generation = 0;
    absl::Time read_at;
  };
  Ticket BeginRead();
  void Fill(const Ticket& ticket, absl::string_view clinic_id, absl::string_view appointment_id,
            const v1::Appointment& value);

  void Invalidate(absl::string_view clinic_id, absl::string_view appointment_id);
  // A notice from the channel: "<stream entry id or -> clinics/{clinic}/appointments/{id}".
  // Anything unparseable empties the whole cache (safe, if wasteful).
  void InvalidateFromNotice(absl::string_view payload);
  // The subscription is lost: stop serving and drop everything.
  void Suspend();
  // The subscription is confirmed: start serving, from empty.
  void Resume();

 private:
  static std::string Key(absl::string_view clinic_id, absl::string_view appointment_id);
  void Count(prometheus::Counter* counter);

  struct Entry {
    std::shared_ptr<const v1::Appointment> value;
    absl::Time expires_at;
  };

  Clock& clock_;
  const Options options_;
  std::atomic<bool> serving_{false};
  absl::Mutex mu_;
  uint64_t generation_ ABSL_GUARDED_BY(mu_) = 0;
  absl::flat_hash_map<std::string, Entry> entries_ ABSL_GUARDED_BY(mu_);
  prometheus::Counter* hits_ = nullptr;
  prometheus::Counter* misses_ = nullptr;
  prometheus::Counter* invalidations_ = nullptr;
  prometheus::Gauge* serving_gauge_ = nullptr;
};

}  // namespace continuum::scheduling

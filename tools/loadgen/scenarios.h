// What continuum-loadgen can drive, and the data each scenario needs.
//
// `Seed` prepares a running platform once (clinic "kap" through testing::Platform's
// SeedMedicineSession, plus booking clients, a week of bookings to search, session records to
// write to, the client's conversation) and returns the names the scenarios use, as a State
// that main() stores in a file. Every scenario then only reads that State.
#pragma once

#include <sys/types.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "tools/loadgen/driver.h"
#include "tools/loadgen/json.h"

namespace continuum::loadgen {

// key=value lines.
class State {
 public:
  static absl::StatusOr<State> Read(const std::string& path);
  absl::Status Write(const std::string& path) const;
  void Set(const std::string& key, const std::string& value) { values_[key] = value; }
  // NOT_FOUND naming the key (run `continuum-loadgen --scenario=setup` first).
  absl::StatusOr<std::string> Get(const std::string& key) const;
  const std::map<std::string, std::string>& values() const { return values_; }

 private:
  std::map<std::string, std::string> values_;
};

struct SeedConfig {
  std::string scheduling, records, messaging;  // host:port of each service
  int booking_clients = 64;                    // bookings spread over this many programs
  int record_count = 2816;                     // session records the writes spread over (tools/bench/run.sh)
};
absl::StatusOr<State> Seed(const SeedConfig& config);

struct WorkloadConfig {
  std::string address;  // the server the scenario calls
  int connections = 4;
  absl::Duration deadline = absl::Seconds(10);  // of every call
  int payload_bytes = 16;                       // echo message / timeline text size
  int book_window = 0;                          // book: which range of free slots to use
  int conversations = 16;                       // deliver: client conversations (and live streams) used
  int streams_per_connection = 32;              // heartbeat-stream: streams per connection
  int entries_per_record = 40;                  // record-write: writes per record, then fresh ones (0 = no cap)
  int record_offset = 0;                        // record-write: index of the first seeded record used
};

// A Workload that can describe what it measured beyond the calls (JSON fields).
class ScenarioWorkload : public Workload {
 public:
  virtual void AddJson(JsonObject& out) const {}
};

// `scenario` is one of echo, get-appointment, search-slots, book, record-write, heartbeat,
// heartbeat-stream (a heartbeat per message on StreamHeartbeats streams, one in flight per
// stream), deliver (SendMessage round robin over client conversations, measured from the intended send
// time to live delivery on each client's Subscribe stream). Connects every channel before
// returning.
absl::StatusOr<std::unique_ptr<ScenarioWorkload>> MakeWorkload(const std::string& scenario,
                                                               const WorkloadConfig& config, const State& state);

// Opens `streams` Subscribe streams (distinct people) over `connections` channels, and reads
// the server's RSS and thread count (from /proc/`server_pid`) before and after.
absl::StatusOr<JsonObject> RunStreams(const std::string& address, int streams, int connections, pid_t server_pid);

// Bare single-row INSERTs (one transaction each) from `threads` threads through
// common/db, i.e. with the durability settings the services use (SQLite WAL +
// synchronous=FULL; PostgreSQL as configured): the baseline for durable record writes.
absl::StatusOr<LoadResult> RunBareInsert(const std::string& database_url, int threads, int payload_bytes,
                                         absl::Duration warmup, absl::Duration duration);

}  // namespace continuum::loadgen

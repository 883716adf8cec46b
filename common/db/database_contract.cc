#include "common/db/database_contract.h"

#include <atomic>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/db/migrations.h"
#include "common/status/errors.h"
#include "common/status/macros.h"
#include "gmock/gmock.h"

namespace continuum::db {

std::vector<DatabaseContractTest::Commit> DatabaseContractTest::TakeCommits() {
  absl::MutexLock lock(&commits_mu_);
  return std::exchange(commits_, {});
}

void DatabaseContractTest::SetUp() {
  Options options;
  options.on_commit = [this](absl::Duration took, bool synced, int transactions) {
    absl::MutexLock lock(&commits_mu_);
    commits_.push_back({took, synced, transactions});
  };
  auto db = GetParam().open(std::move(options));
  ASSERT_TRUE(db.ok()) << db.status();
  db_ = std::move(*db);
  ASSERT_TRUE(ApplyMigrations(*db_, "contract",
                              {{1, "items", R"sql(
CREATE TABLE items (
  id TEXT PRIMARY KEY,
  n BIGINT NOT NULL DEFAULT 0,
  x DOUBLE PRECISION,
  label TEXT,
  data {{BLOB}}
);
CREATE TABLE seq (id {{AUTOINCREMENT_PK}}, v TEXT NOT NULL);
)sql"}})
                  .ok());
}

namespace {

TEST_P(DatabaseContractTest, RoundTripsEveryValueType) {
  std::string bytes("a\0b\xff", 4);
  ASSERT_TRUE(db_->Exec("INSERT INTO items (id, n, x, label, data) VALUES ($1, $2, $3, $4, $5)",
                        {"k1", int64_t{1} << 40, 2.5, Null(), Blob{bytes}})
                  .ok());
  auto rows = db_->Query("SELECT id, n, x, label, data FROM items WHERE id = $1", {"k1"});
  ASSERT_TRUE(rows.ok()) << rows.status();
  ASSERT_EQ(rows->size(), 1u);
  const Row& r = rows->at(0);
  EXPECT_EQ(r.Text(0), "k1");
  EXPECT_EQ(r.Int(1), int64_t{1} << 40);
  EXPECT_DOUBLE_EQ(r.Double(2), 2.5);
  EXPECT_TRUE(r.IsNull(3));
  EXPECT_EQ(r.Bytes(4), bytes);
}

TEST_P(DatabaseContractTest, ParametersMayRepeatAndComeOutOfOrder) {
  ASSERT_TRUE(db_->Exec("INSERT INTO items (id, label, n) VALUES ($2, $1, $3)", {"lbl", "k2", int64_t{7}}).ok());
  auto rows = db_->Query("SELECT label FROM items WHERE id = $1 AND (n = $2 OR n = $2)", {"k2", int64_t{7}});
  ASSERT_TRUE(rows.ok()) << rows.status();
  ASSERT_EQ(rows->size(), 1u);
  EXPECT_EQ(rows->at(0).Text(0), "lbl");
}

TEST_P(DatabaseContractTest, CommitsWhenCallbackSucceedsAndRollsBackWhenItFails) {
  ASSERT_TRUE(db_->InTransaction([](Tx& tx) {
                    return tx.Exec("INSERT INTO items (id) VALUES ('kept')").status();
                  }).ok());
  absl::Status failed = db_->InTransaction([](Tx& tx) -> absl::Status {
    RETURN_IF_ERROR(tx.Exec("INSERT INTO items (id) VALUES ('dropped')").status());
    RETURN_IF_ERROR(tx.Exec("UPDATE items SET n = 99 WHERE id = 'kept'").status());
    return absl::FailedPreconditionError("rule not met");
  });
  EXPECT_EQ(failed.code(), absl::StatusCode::kFailedPrecondition);
  auto rows = db_->Query("SELECT id, n FROM items ORDER BY id");
  ASSERT_TRUE(rows.ok());
  ASSERT_EQ(rows->size(), 1u);
  EXPECT_EQ(rows->at(0).Text(0), "kept");
  EXPECT_EQ(rows->at(0).Int(1), 0);
}

// How a transaction begins must not matter (on PostgreSQL BEGIN travels with the first
// statement or script): a script first, a failing first statement, no statement at all.
TEST_P(DatabaseContractTest, TransactionsAreAtomicHoweverTheyBegin) {
  ASSERT_TRUE(db_->Exec("INSERT INTO items (id) VALUES ('a')").ok());
  absl::Status failed = db_->InTransaction([](Tx& tx) -> absl::Status {
    RETURN_IF_ERROR(tx.ExecScript("UPDATE items SET n = 5"));
    RETURN_IF_ERROR(tx.Exec("INSERT INTO items (id) VALUES ('b')").status());
    return absl::FailedPreconditionError("rule not met");
  });
  EXPECT_EQ(failed.code(), absl::StatusCode::kFailedPrecondition);
  for (int i = 0; i < 4; ++i) {  // every pooled connection gets a failing first statement
    EXPECT_EQ(db_->InTransaction([](Tx& tx) { return tx.Exec("INSERT INTO items (id) VALUES ('a')").status(); })
                  .code(),
              absl::StatusCode::kAlreadyExists);
  }
  EXPECT_TRUE(db_->InTransaction([](Tx&) { return absl::OkStatus(); }).ok()) << "no statement";
  ASSERT_TRUE(db_->InTransaction([](Tx& tx) -> absl::Status {
                    RETURN_IF_ERROR(tx.ExecScript("UPDATE items SET n = 7"));
                    return tx.Exec("INSERT INTO items (id, n) VALUES ('c', 8)").status();
                  }).ok())
      << "connections are usable after those";
  auto rows = db_->Query("SELECT id, n FROM items ORDER BY id");
  ASSERT_TRUE(rows.ok());
  ASSERT_EQ(rows->size(), 2u);
  EXPECT_EQ(rows->at(0).Text(0), "a");
  EXPECT_EQ(rows->at(0).Int(1), 7);
  EXPECT_EQ(rows->at(1).Text(0), "c");
  EXPECT_EQ(rows->at(1).Int(1), 8);
}

// Deferred statements (sent with the next statement or the commit on PostgreSQL) run in the
// order issued, are seen by the transaction's later statements, commit with it, and a failing
// one fails the transaction wherever it is reported: nothing of it is stored, the error is the
// statement's own (here a unique violation, with its constraint), and every pooled connection
// is usable afterwards.
TEST_P(DatabaseContractTest, DeferredStatementsRunInOrderAndFailTheirTransaction) {
  ASSERT_TRUE(db_->InTransaction([](Tx& tx) -> absl::Status {
                    RETURN_IF_ERROR(tx.ExecDeferred("INSERT INTO items (id, n) VALUES ($1, 1)", {"a"}));
                    RETURN_IF_ERROR(tx.ExecDeferred("UPDATE items SET n = n + 10 WHERE id = $1", {"a"}));
                    ASSIGN_OR_RETURN(Rows seen, tx.Query("SELECT n FROM items WHERE id = 'a'"));
                    if (seen.size() != 1 || seen[0].Int(0) != 11) return absl::InternalError("deferred not seen");
                    RETURN_IF_ERROR(tx.ExecDeferred("INSERT INTO items (id, data) VALUES ($1, $2)",
                                                    {"b", Blob{std::string("\0\xff", 2)}}));
                    return tx.ExecDeferred("UPDATE items SET n = 2 WHERE id = $1", {"b"});  // goes with COMMIT
                  }).ok());
  for (int i = 0; i < 4; ++i) {  // every pooled connection: the commit reports the failure
    absl::Status at_commit = db_->InTransaction([&](Tx& tx) -> absl::Status {
      RETURN_IF_ERROR(tx.ExecDeferred("INSERT INTO items (id) VALUES ($1)", {absl::StrCat("lost", i)}));
      return tx.ExecDeferred("INSERT INTO items (id) VALUES ('a')");
    });
    EXPECT_EQ(at_commit.code(), absl::StatusCode::kAlreadyExists) << at_commit;
    EXPECT_EQ(ErrorReason(at_commit), "ALREADY_EXISTS");
    EXPECT_NE(ErrorMetadata(at_commit)["constraint"], "") << at_commit;
  }
  absl::Status at_next = db_->InTransaction([](Tx& tx) -> absl::Status {
    RETURN_IF_ERROR(tx.ExecDeferred("INSERT INTO items (id) VALUES ('lost')"));
    RETURN_IF_ERROR(tx.ExecDeferred("INSERT INTO items (id) VALUES ('b')"));
    return tx.Exec("UPDATE items SET n = 99").status();  // reports the failure, or SQLite did at once
  });
  EXPECT_EQ(at_next.code(), absl::StatusCode::kAlreadyExists) << at_next;
  absl::Status refused = db_->InTransaction([](Tx& tx) -> absl::Status {
    RETURN_IF_ERROR(tx.ExecDeferred("UPDATE items SET n = 99"));
    return absl::FailedPreconditionError("rule not met");  // the body fails after deferring
  });
  EXPECT_EQ(refused.code(), absl::StatusCode::kFailedPrecondition);
  auto rows = db_->Query("SELECT id, n, data FROM items ORDER BY id");
  ASSERT_TRUE(rows.ok()) << rows.status();
  ASSERT_EQ(rows->size(), 2u) << "nothing of a failed transaction is stored";
  EXPECT_EQ(rows->at(0).Text(0), "a");
  EXPECT_EQ(rows->at(0).Int(1), 11);
  EXPECT_EQ(rows->at(1).Text(0), "b");
  EXPECT_EQ(rows->at(1).Int(1), 2);
  EXPECT_EQ(rows->at(1).Bytes(2), std::string("\0\xff", 2));
}

TEST_P(DatabaseContractTest, UniqueViolationIsAlreadyExistsAndKeepsFirstRow) {
  ASSERT_TRUE(db_->Exec("INSERT INTO items (id, label) VALUES ('dup', 'first')").ok());
  auto second = db_->Exec("INSERT INTO items (id, label) VALUES ('dup', 'second')");
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(ErrorReason(second.status()), "ALREADY_EXISTS");
  auto rows = db_->Query("SELECT label FROM items WHERE id = 'dup'");
  ASSERT_TRUE(rows.ok());
  EXPECT_EQ(rows->at(0).Text(0), "first");
}

TEST_P(DatabaseContractTest, ExecReportsRowsChangedAndOnConflictWorks) {
  ASSERT_TRUE(db_->Exec("INSERT INTO items (id) VALUES ('a'), ('b'), ('c')").ok());
  auto changed = db_->Exec("UPDATE items SET n = n + 1 WHERE id <> $1", {"a"});
  ASSERT_TRUE(changed.ok());
  EXPECT_EQ(*changed, 2);
  auto none = db_->Exec("INSERT INTO items (id) VALUES ('a') ON CONFLICT (id) DO NOTHING");
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_EQ(*none, 0);
  auto returning = db_->Query("INSERT INTO seq (v) VALUES ('x') RETURNING id");
  ASSERT_TRUE(returning.ok()) << returning.status();
  EXPECT_GE(returning->at(0).Int(0), 1);
}

TEST_P(DatabaseContractTest, AutoincrementIdsIncrease) {
  int64_t last = 0;
  for (int i = 0; i < 5; ++i) {
    auto rows = db_->Query("INSERT INTO seq (v) VALUES ($1) RETURNING id", {std::string("v")});
    ASSERT_TRUE(rows.ok()) << rows.status();
    int64_t id = rows->at(0).Int(0);
    EXPECT_GT(id, last);
    last = id;
  }
}

TEST_P(DatabaseContractTest, ConcurrentWritersLoseNoUpdate) {
  ASSERT_TRUE(db_->Exec("INSERT INTO items (id, n) VALUES ('counter', 0)").ok());
  constexpr int kThreads = 8, kPerThread = 25;
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kPerThread; ++i) {
        absl::Status s = db_->InTransaction([](Tx& tx) -> absl::Status {
          ASSIGN_OR_RETURN(Rows r, tx.Query("SELECT n FROM items WHERE id = 'counter'"));
          // Read-modify-write in one transaction: the increment must not be lost.
          return tx.Exec("UPDATE items SET n = n + 1 WHERE id = 'counter' AND n >= $1",
                         {r.at(0).Int(0)}).status();
        }, TxMode::kReadWrite, 10);
        if (!s.ok()) failures++;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  auto rows = db_->Query("SELECT n FROM items WHERE id = 'counter'");
  ASSERT_TRUE(rows.ok());
  EXPECT_EQ(rows->at(0).Int(0), kThreads * kPerThread);
}

// Concurrent writers, some of whose transactions fail after writing (SQLite commits
// concurrent writers as a group): each caller's outcome is its own, and exactly the
// transactions that reported success are stored, each whole.
TEST_P(DatabaseContractTest, ConcurrentTransactionsThatFailLeaveNoTraceAndOthersCommit) {
  constexpr int kThreads = 8, kPerThread = 40;
  std::atomic<int> reported_ok{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        const std::string id = absl::StrCat("t", t, "-", i);
        const bool fail = (t * kPerThread + i) % 7 == 3;
        absl::Status s = db_->InTransaction([&](Tx& tx) -> absl::Status {
          RETURN_IF_ERROR(tx.Exec("INSERT INTO items (id, n) VALUES ($1, 1)", {id}).status());
          RETURN_IF_ERROR(tx.Exec("INSERT INTO items (id, n) VALUES ($1, 2)", {id + "-pair"}).status());
          if (fail) return absl::FailedPreconditionError("body fails after writing");
          return absl::OkStatus();
        });
        EXPECT_EQ(s.ok(), !fail) << id << ": " << s;
        if (s.ok()) reported_ok++;
      }
    });
  }
  for (auto& t : threads) t.join();
  auto rows = db_->Query("SELECT COUNT(*) FROM items WHERE n = 1");
  auto pairs = db_->Query("SELECT COUNT(*) FROM items WHERE n = 2");
  ASSERT_TRUE(rows.ok() && pairs.ok());
  EXPECT_EQ(rows->at(0).Int(0), reported_ok.load());
  EXPECT_EQ(pairs->at(0).Int(0), reported_ok.load()) << "no half-applied transaction";
  EXPECT_EQ(reported_ok.load(), kThreads * kPerThread - (kThreads * kPerThread + 3) / 7);
}

TEST_P(DatabaseContractTest, ConcurrentInsertsOfOneKeyHaveExactlyOneWinner) {
  constexpr int kThreads = 8;
  std::atomic<int> wins{0}, conflicts{0}, other{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      auto s = db_->Exec("INSERT INTO items (id, n) VALUES ('slot', $1)", {int64_t{t}});
      if (s.ok()) wins++;
      else if (s.status().code() == absl::StatusCode::kAlreadyExists) conflicts++;
      else other++;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(wins.load(), 1);
  EXPECT_EQ(conflicts.load(), kThreads - 1);
  EXPECT_EQ(other.load(), 0);
}

TEST_P(DatabaseContractTest, MigrationsApplyOnceAndAFailedOneLeavesNoTrace) {
  std::vector<Migration> migrations = {{1, "a", "CREATE TABLE m1 (id TEXT PRIMARY KEY);"},
                                       {2, "b", "CREATE TABLE m2 (id TEXT PRIMARY KEY);"}};
  ASSERT_TRUE(ApplyMigrations(*db_, "mtest", migrations).ok());
  ASSERT_TRUE(ApplyMigrations(*db_, "mtest", migrations).ok()) << "re-applying must be a no-op";
  migrations.push_back({3, "broken", "CREATE TABLE m3 (id TEXT PRIMARY KEY); CREATE TABLE m1 (x TEXT);"});
  absl::Status s = ApplyMigrations(*db_, "mtest", migrations);
  EXPECT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.message()), ::testing::HasSubstr("mtest/3"));
  auto recorded = db_->Query("SELECT version FROM schema_migrations WHERE component = 'mtest' ORDER BY version");
  ASSERT_TRUE(recorded.ok());
  ASSERT_EQ(recorded->size(), 2u);
  EXPECT_EQ(recorded->at(1).Int(0), 2);
  EXPECT_FALSE(db_->Query("SELECT * FROM m3").ok()) << "m3 must have been rolled back";
}

TEST_P(DatabaseContractTest, ReadOnlyTransactionRefusesWrites) {
  absl::Status s = db_->InTransaction(
      [](Tx& tx) { return tx.Exec("INSERT INTO items (id) VALUES ('ro')").status(); }, TxMode::kReadOnly);
  EXPECT_FALSE(s.ok()) << "a write inside a read-only transaction succeeded";
  auto rows = db_->Query("SELECT COUNT(*) FROM items WHERE id = 'ro'");
  ASSERT_TRUE(rows.ok());
  EXPECT_EQ(rows->at(0).Int(0), 0);
}

// Whether the transaction's commit waits to be durable, as the backend reports it.
absl::StatusOr<bool> CommitWaitsForSync(Tx& tx) {
  if (tx.backend() == Backend::kPostgres) {
    ASSIGN_OR_RETURN(Rows rows, tx.Query("SELECT current_setting('synchronous_commit')"));
    return rows.at(0).Text(0) != "off";
  }
  ASSIGN_OR_RETURN(Rows rows, tx.Query("PRAGMA synchronous"));
  return rows.at(0).Int(0) == 2;  // FULL; NORMAL (1) skips the commit's fsync in WAL mode
}

TEST_P(DatabaseContractTest, UnsyncedWritesCommitAndNeverRelaxAnotherWrite) {
  // Unsynced and synced writes at once: on SQLite they share group commits, and a group with
  // a synced member must commit synced; every write must be stored either way.
  constexpr int kThreads = 4, kEach = 25;
  std::atomic<int> synced_saw_relaxed{0}, unsynced_saw_sync{0}, failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      const bool unsynced = t % 2 == 1;
      for (int i = 0; i < kEach; ++i) {
        absl::Status s = db_->InTransaction([&](Tx& tx) -> absl::Status {
          ASSIGN_OR_RETURN(bool waits, CommitWaitsForSync(tx));
          if (!unsynced && !waits) synced_saw_relaxed++;
          if (unsynced && waits) unsynced_saw_sync++;
          return tx.Exec("INSERT INTO items (id, n) VALUES ($1, $2)", {absl::StrCat("w", t, "-", i), int64_t{t}})
              .status();
        }, unsynced ? TxMode::kReadWriteUnsynced : TxMode::kReadWrite, 10);
        if (!s.ok()) {
          ADD_FAILURE() << s;
          failures++;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(synced_saw_relaxed.load(), 0) << "a durable write committed without waiting for its sync";
  auto rows = db_->Query("SELECT COUNT(*) FROM items WHERE id LIKE 'w%'");
  ASSERT_TRUE(rows.ok()) << rows.status();
  EXPECT_EQ(rows->at(0).Int(0), kThreads * kEach);
  // Alone, an unsynced write is relaxed (on SQLite a group of unsynced writes only), and the
  // next durable write waits again.
  bool alone = true;
  ASSERT_TRUE(db_->InTransaction([&](Tx& tx) -> absl::Status {
                    ASSIGN_OR_RETURN(alone, CommitWaitsForSync(tx));
                    return tx.Exec("INSERT INTO items (id) VALUES ('relaxed')").status();
                  }, TxMode::kReadWriteUnsynced).ok());
  EXPECT_FALSE(alone);
  bool after = false;
  ASSERT_TRUE(db_->InTransaction([&](Tx& tx) -> absl::Status {
                    ASSIGN_OR_RETURN(after, CommitWaitsForSync(tx));
                    return tx.Exec("INSERT INTO items (id) VALUES ('durable')").status();
                  }).ok());
  EXPECT_TRUE(after);
  rows = db_->Query("SELECT COUNT(*) FROM items WHERE id IN ('relaxed', 'durable')");
  ASSERT_TRUE(rows.ok()) << rows.status();
  EXPECT_EQ(rows->at(0).Int(0), 2);
}

TEST_P(DatabaseContractTest, CommitsAreReportedWithTheirDurabilityAndTransactions) {
  TakeCommits();  // the migrations'
  ASSERT_TRUE(db_->Exec("INSERT INTO items (id) VALUES ('c1')").ok());
  ASSERT_TRUE(db_->InTransaction([](Tx& tx) { return tx.Exec("INSERT INTO items (id) VALUES ('c2')").status(); },
                                 TxMode::kReadWriteUnsynced)
                  .ok());
  ASSERT_TRUE(db_->InTransaction([](Tx& tx) { return tx.Query("SELECT id FROM items").status(); },
                                 TxMode::kReadOnly)
                  .ok());
  EXPECT_FALSE(db_->InTransaction([](Tx& tx) -> absl::Status {
                     RETURN_IF_ERROR(tx.Exec("INSERT INTO items (id) VALUES ('never')").status());
                     return absl::FailedPreconditionError("rolled back");
                   }).ok());
  auto commits = TakeCommits();
  ASSERT_EQ(commits.size(), 2u) << "one report per committed write; none for the read or the rollback";
  EXPECT_TRUE(commits[0].synced);
  EXPECT_FALSE(commits[1].synced);
  for (const auto& c : commits) {
    EXPECT_EQ(c.transactions, 1);
    EXPECT_GE(c.took, absl::ZeroDuration());
  }

  // Concurrent writers, every fifth of them failing: on SQLite they share commits (a group's
  // failed members roll back alone), and the reports count exactly the writes that committed.
  constexpr int kThreads = 4, kEach = 25;
  std::atomic<int> committed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i) {
        const bool fail = i % 5 == 0;
        absl::Status s = db_->InTransaction([&](Tx& tx) -> absl::Status {
          RETURN_IF_ERROR(tx.Exec("INSERT INTO items (id) VALUES ($1)", {absl::StrCat("g", t, "-", i)}).status());
          return fail ? absl::FailedPreconditionError("refused") : absl::OkStatus();
        });
        if (s.ok()) committed++;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(committed.load(), kThreads * kEach * 4 / 5);
  int reported = 0;
  commits = TakeCommits();
  for (const auto& c : commits) {
    EXPECT_TRUE(c.synced);
    EXPECT_GE(c.transactions, 1);
    reported += c.transactions;
  }
  EXPECT_EQ(reported, committed.load());
  EXPECT_LE(commits.size(), static_cast<size_t>(committed.load()));
}

}  // namespace
}  // namespace continuum::db

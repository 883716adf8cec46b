#include "services/session_record/session_record_service.h"

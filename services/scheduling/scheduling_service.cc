#include "services/scheduling/scheduling_service.h"

import { ref } from 'vue'
import { ElMessage } from 'element-plus'
import { ApiError, errorMessage } from '@/api/errors'

/**
 * Field-level errors from a 422's `fields`, shown inline through `el-form-item :error`;
 * any other failure becomes a toast with the server's message.
 */
export function useFieldErrors() {
  const fieldErrors = ref<Record<string, string>>({})

  function clear(): void {
    fieldErrors.value = {}
  }

  /** Shows `err`; returns true when it carried field errors. */
  function report(err: unknown): boolean {
    if (err instanceof ApiError && Object.keys(err.fields).length > 0) {
      fieldErrors.value = { ...err.fields }
      ElMessage.error(err.message)
      return true
    }
    ElMessage.error(errorMessage(err))
    return false
  }

  return { fieldErrors, clear, report }
}

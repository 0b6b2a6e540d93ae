import { reactive, ref } from 'vue'
import { ElMessage } from 'element-plus'
import { changePassword } from '@/api/auth'
import { useFieldErrors } from '@/composables/useFieldErrors'
import { useAuthStore } from '@/stores/auth'
import { t } from '@/locales'

export function useAccount() {
  const auth = useAuthStore()
  const form = reactive({ current_password: '', new_password: '', confirm: '' })
  const saving = ref(false)
  const errors = useFieldErrors()

  async function submit(): Promise<void> {
    errors.clear()
    if (form.new_password !== form.confirm) {
      errors.fieldErrors.value = { confirm: t('account.mismatch') }
      return
    }
    saving.value = true
    try {
      await changePassword(form.current_password, form.new_password)
      ElMessage.success(t('account.changed'))
      Object.assign(form, { current_password: '', new_password: '', confirm: '' })
    } catch (err) {
      errors.report(err)
    } finally {
      saving.value = false
    }
  }

  return { auth, form, saving, fieldErrors: errors.fieldErrors, submit }
}

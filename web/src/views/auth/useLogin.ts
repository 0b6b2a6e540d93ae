import { reactive, ref, useTemplateRef } from 'vue'
import { useRoute, useRouter } from 'vue-router'
import type { FormInstance, FormRules } from 'element-plus'
import { ApiError, errorMessage } from '@/api/errors'
import { safeRedirect } from '@/router'
import { useAuthStore } from '@/stores/auth'
import { t } from '@/locales'

export function useLogin() {
  const auth = useAuthStore()
  const route = useRoute()
  const router = useRouter()
  // Bound to the template's `ref="formRef"` of the page that calls this composable.
  const formRef = useTemplateRef<FormInstance>('formRef')
  const form = reactive({ email: '', password: '' })
  const submitting = ref(false)
  const error = ref<string | null>(null)

  const rules: FormRules = {
    email: [
      { required: true, message: () => t('login.emailRequired'), trigger: 'blur' },
      { type: 'email', message: () => t('login.emailInvalid'), trigger: 'blur' },
    ],
    password: [{ required: true, message: () => t('login.passwordRequired'), trigger: 'blur' }],
  }

  async function submit(): Promise<void> {
    error.value = null
    const valid = await formRef.value?.validate().catch(() => false)
    if (!valid) return
    submitting.value = true
    try {
      await auth.login(form.email.trim(), form.password)
      await router.replace(safeRedirect(route.query.redirect))
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) error.value = t('login.badCredentials')
      else if (err instanceof ApiError && err.status === 429) error.value = t('login.tooMany')
      else error.value = errorMessage(err)
    } finally {
      submitting.value = false
    }
  }

  return { form, rules, submitting, error, submit }
}
